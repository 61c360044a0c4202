"""The readiness checks behind /readyz (django-health-check): database, Redis (the job broker),
media storage, the feature store and a recent ML worker heartbeat."""

from __future__ import annotations

import dataclasses
import datetime as dt
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import redis
from django.conf import settings
from health_check.base import HealthCheck
from health_check.checks import Database, Storage
from health_check.contrib.redis import Redis
from health_check.exceptions import ServiceUnavailable
from redis.asyncio import Redis as AsyncRedis

from grading.broker import broker_client, broker_url, worker_heartbeat_key

CHECK_TIMEOUT = dt.timedelta(seconds=2)
ML_QUEUE = "ml"


def _broker_client() -> AsyncRedis:
    seconds = CHECK_TIMEOUT.total_seconds()
    return AsyncRedis.from_url(broker_url(), socket_connect_timeout=seconds, socket_timeout=seconds)


@dataclasses.dataclass
class FeatureStore(HealthCheck):
    """The feature store folder exists (or can be created) and takes a write."""

    def run(self) -> None:
        folder = Path(settings.FUNDUS_FEATURE_STORE)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=folder, prefix=".readyz-"):
                pass
        except OSError as error:
            raise ServiceUnavailable(f"Feature store not writable: {error.strerror}") from error


@dataclasses.dataclass
class MlWorkerHeartbeat(HealthCheck):
    """An ML worker wrote its heartbeat within FUNDUS_WORKER_HEARTBEAT_MAX_AGE seconds."""

    def run(self) -> None:
        max_age = settings.FUNDUS_WORKER_HEARTBEAT_MAX_AGE
        client = broker_client(timeout=CHECK_TIMEOUT.total_seconds())
        try:
            value = client.get(worker_heartbeat_key(queue=ML_QUEUE))
        except (redis.exceptions.RedisError, OSError) as error:
            raise ServiceUnavailable("Cannot read the ML worker heartbeat from Redis") from error
        finally:
            client.close()
        if value is None:
            raise ServiceUnavailable(f"No ML worker heartbeat in the last {max_age} s")
        age = time.time() - float(value)
        if age > max_age:
            raise ServiceUnavailable(f"Last ML worker heartbeat {age:.0f} s ago (max {max_age} s)")


def readiness_checks() -> Sequence[tuple[type[HealthCheck], dict[str, Any]]]:
    return (
        (Database, {}),
        (Redis, {"client_factory": _broker_client}),
        (Storage, {}),
        (FeatureStore, {}),
        (MlWorkerHeartbeat, {}),
    )
