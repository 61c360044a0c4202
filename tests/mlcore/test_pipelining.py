"""``map_ahead``: a bounded, ordered map over a pool."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from mlcore.data.pipelining import map_ahead


def test_results_come_in_input_order_with_their_items() -> None:
    def slow_for_small(n: int) -> int:
        time.sleep(0.001 * (10 - n))  # the first items finish last
        return n * n

    with ThreadPoolExecutor(4) as pool:
        assert list(map_ahead(pool, slow_for_small, range(10), ahead=4)) == [
            (n, n * n) for n in range(10)
        ]


def test_no_more_than_ahead_calls_are_started_before_the_consumer_takes_one() -> None:
    started: list[int] = []
    lock = threading.Lock()

    def record(n: int) -> int:
        with lock:
            started.append(n)
        return n

    with ThreadPoolExecutor(4) as pool:
        results = map_ahead(pool, record, iter(range(100)), ahead=3)
        next(results)
        time.sleep(0.05)
        assert len(started) <= 3
        results.close()  # the consumer stops: nothing more is submitted


def test_an_error_is_raised_at_its_item() -> None:
    def fail_on_three(n: int) -> int:
        if n == 3:
            raise ValueError("three")
        return n

    seen = []
    with ThreadPoolExecutor(2) as pool, pytest.raises(ValueError, match="three"):
        for item, _ in map_ahead(pool, fail_on_three, range(6), ahead=2):
            seen.append(item)
    assert seen == [0, 1, 2]
    with ThreadPoolExecutor(1) as pool, pytest.raises(ValueError, match="ahead"):
        list(map_ahead(pool, fail_on_three, range(2), ahead=0))
