"""Decoding images for a model in a pool of threads or processes, ahead of the forward pass.

A full-size 4288 x 2848 fundus JPEG costs ~10 ms of CPU to decode (at 1/8 DCT scale: 7.6 ms of
it is libjpeg-turbo's entropy decoding, which no scaling skips) and resize, nearly as much as
EfficientNet-Lite0's forward pass on it (12 ms). Decoding runs ahead of the forward pass in a
pool of threads (Pillow releases the GIL while decoding) or of worker processes (spawned, never
forked: the parent runs TensorFlow's thread pools), for hosts where the GIL rather than the
CPUs limits decoding. ``decoded_images`` keeps a bounded number of chunks in flight, so memory
stays flat whatever the number of images, and yields the images in input order.

Imports numpy and Pillow only: the worker processes never load TensorFlow.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import numpy as np

from mlcore.data.pipelining import map_ahead
from mlcore.data.preprocessing import ImageLoadError, preprocess_image

# Images per task sent to a worker: enough to amortise the inter-process round trip (~0.2 ms),
# few enough that the first batch is ready early.
CHUNK_IMAGES = 4


def default_decode_processes(environ: dict[str, str] | None = None) -> int:
    """Decoding processes from ``FUNDUS_DECODE_PROCESSES``; by default 0, threads in this
    process. On 2 cores, where the forward pass already keeps both busy, threads were faster
    than processes (bench/extract.py, full-size photographs: 0.53 against 0.49 of the forward
    bound with Lite0; the processes' pickling is pure overhead when no core is idle); processes
    pay off where the GIL, not the CPUs, limits decoding (many cores)."""
    env = os.environ if environ is None else environ
    raw = env.get("FUNDUS_DECODE_PROCESSES", "").strip()
    if not raw:
        return 0
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"FUNDUS_DECODE_PROCESSES must be an integer, not {raw!r}") from None
    if value < 0:
        raise ValueError(f"FUNDUS_DECODE_PROCESSES must be >= 0, not {value}")
    return value


def decode_chunk(paths: Sequence[str], method: str, size: int) -> list[tuple[np.ndarray, bool]]:
    """``(image, ok)`` per path: the preprocessed ``size`` x ``size`` RGB uint8 image, or zeros
    and ``False`` for a file that cannot be decoded (the caller names it)."""
    decoded = []
    for path in paths:
        try:
            decoded.append((preprocess_image(path, method=method, size=size), True))
        except (ImageLoadError, OSError):
            decoded.append((np.zeros((size, size, 3), np.uint8), False))
    return decoded


@functools.lru_cache(maxsize=2)
def _process_pool(processes: int) -> ProcessPoolExecutor:
    # Kept for the life of the process: spawning costs ~0.5 s (numpy and Pillow imports), paid
    # once per worker rather than once per extraction.
    return ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn"))


@functools.lru_cache(maxsize=2)
def _thread_pool(threads: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(threads, thread_name_prefix="decode")


def decoding_executor(processes: int) -> Executor:
    """Worker processes, or threads (Pillow releases the GIL while decoding) when ``processes``
    is 0 or this process may not have children (a daemonic process, e.g. a Celery prefork
    child)."""
    if processes > 0 and not multiprocessing.current_process().daemon:
        return _process_pool(processes)
    return _thread_pool(max(2, os.cpu_count() or 1))


def decoded_images(
    paths: Sequence[str],
    *,
    method: str,
    size: int,
    processes: int,
    chunk: int = CHUNK_IMAGES,
    ahead: int | None = None,
) -> Iterator[tuple[np.ndarray, bool]]:
    """``decode_chunk`` over ``paths`` in parallel, yielded in order; at most ``ahead`` chunks
    (default: 4 per worker) are decoded or waiting at any time."""
    executor = decoding_executor(processes)
    chunks = [paths[start : start + chunk] for start in range(0, len(paths), chunk)]
    try:
        for _, decoded in map_ahead(
            executor,
            functools.partial(decode_chunk, method=method, size=size),
            chunks,
            ahead=ahead or 4 * max(processes, 2),
        ):
            yield from decoded
    except BrokenProcessPool:
        # A worker died (killed, out of memory): the next extraction starts a fresh pool.
        _process_pool.cache_clear()
        raise
