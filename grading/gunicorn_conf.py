"""gunicorn settings of the production web server (``gunicorn -c python:grading.gunicorn_conf``).

3 processes x 4 threads for 2 cores: requests spend most of their time waiting on PostgreSQL,
which threads overlap; several processes keep one slow request (or the GIL) from holding up the
rest. Measured with 50 clinicians by ``bench/load.py``, which starts the server with this file.
"""

from __future__ import annotations

import gc

workers = 3
threads = 4
keepalive = 30


def post_worker_init(worker) -> None:
    # The objects created while loading Django and the app (hundreds of thousands) never become
    # garbage; frozen, they are left out of the cyclic collector's full passes, which otherwise
    # scanned them all and stalled a request by ~110 ms every few hundred requests
    # (bench/pages.py: the 7th "api images" request took 165 ms against 50 ms).
    gc.collect()
    gc.freeze()
