"""Running the slow, database-free part of a loop a few items ahead, in a pool.

``map_ahead`` is ``executor.map`` with a bound: at most ``ahead`` calls are running or waiting
for the consumer, so memory stays flat however many items there are, and results come back in
input order. Used to decode images ahead of the forward pass (``mlcore.data.decoding``) and to read,
check and measure photographs ahead of an import's database writes.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def map_ahead(
    executor: Executor, function: Callable[[T], R], items: Iterable[T], *, ahead: int
) -> Iterator[tuple[T, R]]:
    """``(item, function(item))`` in the order of ``items``, computed up to ``ahead`` items in
    advance. An exception raised by ``function`` is raised here, at its item; calls not yet
    started when the consumer stops are cancelled."""
    if ahead < 1:
        raise ValueError(f"ahead must be >= 1, not {ahead}")
    pending: deque[tuple[T, Future[R]]] = deque()
    try:
        for item in items:
            pending.append((item, executor.submit(function, item)))
            if len(pending) >= ahead:
                first, future = pending.popleft()
                yield first, future.result()
        while pending:
            first, future = pending.popleft()
            yield first, future.result()
    finally:
        for _, future in pending:
            future.cancel()
