"""gunicorn settings of the production web server (``gunicorn -c python:grading.gunicorn_conf``).

Sync workers, 2 x CPUs + 1 of them (gunicorn's own rule; 5 on 2 cores): 50 clinicians grading at
once (bench/load.py, 100k images) got p95 "Next image" 68 ms and grading page 92 ms with 5 x 1,
against 101 / 109 ms with 5 processes x 2 threads and 126 / 148 ms with 3 x 4 threads: this
Django work is CPU in Python, so threads of one process wait on one another's GIL. A sync worker
serves one request at a time; put a buffering reverse proxy in front (as any TLS terminator does)
so that a slow client never holds a worker, and ``FUNDUS_WEB_WORKERS`` sets another count.
"""

from __future__ import annotations

import gc
import os

workers = int(os.environ.get("FUNDUS_WEB_WORKERS") or 2 * (os.cpu_count() or 1) + 1)
threads = 1
# Long enough for the largest streaming CSV export (42 MB of predictions at 100k images: 24 s).
timeout = 120


def post_worker_init(worker) -> None:
    # The objects created while loading Django and the app (hundreds of thousands) never become
    # garbage; frozen, they are left out of the cyclic collector's full passes, which otherwise
    # scanned them all and stalled a request by ~110 ms every few hundred requests
    # (bench/pages.py: the 7th "api images" request took 165 ms against 50 ms).
    gc.collect()
    gc.freeze()


def child_exit(server, worker) -> None:
    # With PROMETHEUS_MULTIPROC_DIR (docker-compose), each worker writes its request metrics to
    # files there and /metrics adds them up: a dead worker's live gauges must stop counting.
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
