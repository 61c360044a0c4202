"""The ML worker's heartbeat: a Redis key it rewrites every few seconds, which /readyz reads.

A job's own heartbeat (``Job.heartbeat_at``) only says a running job is alive; this one says a
worker able to run ML jobs is there at all, also when the queue is empty. It lives in the broker's
Redis under the broker's key prefix (so installations sharing a Redis database stay apart), and
expires on its own when the worker is gone.
"""

from __future__ import annotations

import logging
import threading
import time

import redis
from django.conf import settings

from grading.broker import broker_client, worker_heartbeat_key

logger = logging.getLogger(__name__)


def worker_heartbeat_write(*, queue: str, at: float | None = None) -> None:
    """Record that a worker consuming ``queue`` is alive now (``at``: a Unix time)."""
    client = broker_client()
    try:
        client.set(
            worker_heartbeat_key(queue=queue),
            repr(time.time() if at is None else at),
            ex=max(settings.FUNDUS_WORKER_HEARTBEAT_MAX_AGE * 2, 60),
        )
    finally:
        client.close()


def worker_heartbeat_start(*, queues: list[str], stop: threading.Event) -> threading.Thread:
    """Beat for ``queues`` in a daemon thread until ``stop`` is set. A failed write is logged and
    retried at the next beat: Redis being away for a moment must not stop the worker."""

    def beat() -> None:
        while not stop.is_set():
            for queue in queues:
                try:
                    worker_heartbeat_write(queue=queue)
                except (redis.exceptions.RedisError, OSError):
                    logger.warning("Could not write the %s worker heartbeat", queue)
            stop.wait(settings.FUNDUS_WORKER_HEARTBEAT_SECONDS)

    thread = threading.Thread(target=beat, name="worker-heartbeat", daemon=True)
    thread.start()
    return thread
