"""A cache for the review's aggregates (confusion matrices, monthly QWK, grader agreement).

Counting them in SQL takes a few hundred milliseconds at 100,000 images on a small machine; they only
change when a grade, a confirmation or a prediction does. Each entry is keyed by the question (the
filters) and by a stamp of the data: the newest grade and prediction ids and the newest confirmation
time (three index lookups), plus a generation that any saved or deleted grade, image or prediction
renews in this process. A new grade in another process changes the stamp, so every web worker sees it
on its next request; the timeout bounds anything neither catches (e.g. a bulk ``update()``).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from django.core.cache import cache
from django.db import connection
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from grading.models import Grade, Image, ModelVersion, Prediction

T = TypeVar("T")
GENERATION_KEY = "funduscope:review:generation"
TIMEOUT_SECONDS = 300
_MISSING = object()


def review_data_stamp() -> tuple[Any, ...]:
    """Newest grade id, prediction id and confirmation time: changes with every new grade."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT (SELECT MAX(id) FROM {Grade._meta.db_table}),"  # noqa: S608 (table names)
            f" (SELECT MAX(id) FROM {Prediction._meta.db_table}),"
            f" (SELECT MAX(confirmed_at) FROM {Image._meta.db_table})"
        )
        return tuple(cursor.fetchone())


def review_generation() -> str:
    generation = cache.get(GENERATION_KEY)
    if generation is None:
        generation = uuid.uuid4().hex
        cache.set(GENERATION_KEY, generation, None)
    return generation


def review_cache_invalidate() -> None:
    cache.set(GENERATION_KEY, uuid.uuid4().hex, None)


def review_cached(name: str, key: tuple[Any, ...], compute: Callable[[], T]) -> T:
    """``compute()``, or its cached result for the same question on the same data."""
    digest = hashlib.sha256(
        repr((name, key, review_generation(), review_data_stamp())).encode()
    ).hexdigest()
    cache_key = f"funduscope:review:{name}:{digest}"
    found = cache.get(cache_key, _MISSING)
    if found is not _MISSING:
        return found
    value = compute()
    cache.set(cache_key, value, TIMEOUT_SECONDS)
    return value


@receiver(post_save, sender=Grade)
@receiver(post_save, sender=Image)
@receiver(post_save, sender=Prediction)
@receiver(post_save, sender=ModelVersion)
@receiver(post_delete, sender=Grade)
@receiver(post_delete, sender=Image)
@receiver(post_delete, sender=Prediction)
def _review_data_changed(**kwargs: Any) -> None:
    review_cache_invalidate()
