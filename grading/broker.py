"""The job broker's Redis as the operations code reads it: its URL and key prefix as the Celery
app has them (tests point the app elsewhere), a client with short timeouts, and the key of a
worker's heartbeat. A leaf module: services (which write the heartbeat) and selectors (which
read it and the queue depths) both import it."""

from __future__ import annotations

import redis


def broker_url() -> str:
    from grading.celery import app

    return str(app.conf.broker_url)


def broker_key_prefix() -> str:
    from grading.celery import app

    return str((app.conf.broker_transport_options or {}).get("global_keyprefix") or "")


def broker_client(*, timeout: float = 1.0) -> redis.Redis:
    return redis.Redis.from_url(
        broker_url(), socket_connect_timeout=timeout, socket_timeout=timeout
    )


def worker_heartbeat_key(*, queue: str) -> str:
    return f"{broker_key_prefix()}funduscope:worker-heartbeat:{queue}"
