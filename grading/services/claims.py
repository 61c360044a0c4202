"""Writes for grading claims: short leases that keep two clinicians off the same image.

Claiming locks the image row, then re-checks in a fresh statement that a slot is still free before
writing the lease. On PostgreSQL the lock is ``SELECT ... FOR UPDATE SKIP LOCKED``: a clinician whose
candidate is being claimed by someone else at that moment moves straight on to the next image instead
of waiting. (SQLite ignores row locks but serialises writers, which is enough for a single-user demo.)
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Collection

from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from grading.models import GradingClaim, Image
from grading.selectors.worklist import (
    claim_held,
    images_needing_grade,
    workbench_settings_get,
    worklist_sources,
)

# How many candidates one "next image" tries before concluding that everything left is taken.
MAX_CANDIDATES_TRIED = 50


# Every read ignores expired claims (they filter on ``expires_at``), so deleting them is only
# housekeeping: once a minute per process is plenty, and spares "Next image" and the grading page
# a write transaction each.
CLAIM_SWEEP_SECONDS = 60.0
_sweep_lock = threading.Lock()
_sweep_last = -CLAIM_SWEEP_SECONDS


def claims_expired_delete(*, now: dt.datetime | None = None) -> int:
    deleted, _ = GradingClaim.objects.filter(expires_at__lte=now or timezone.now()).delete()
    return deleted


def claims_expired_sweep(*, now: dt.datetime) -> int | None:
    """Delete the expired claims if this process has not done so in the last minute; returns how
    many were deleted, or None when it was not due."""
    global _sweep_last
    with _sweep_lock:
        if time.monotonic() - _sweep_last < CLAIM_SWEEP_SECONDS:
            return None
        _sweep_last = time.monotonic()
    return claims_expired_delete(now=now)


def claims_sweep_reset() -> None:
    """Make the next sweep due now (tests)."""
    global _sweep_last
    with _sweep_lock:
        _sweep_last = -CLAIM_SWEEP_SECONDS


def _claim_write(*, image: Image, grader: User, now: dt.datetime) -> None:
    """Write or renew the lease in one statement (INSERT ... ON CONFLICT DO UPDATE): an expired
    lease of the same clinician may still be there until the next sweep."""
    lease = dt.timedelta(minutes=workbench_settings_get().claim_minutes)
    GradingClaim.objects.bulk_create(
        [GradingClaim(image=image, grader=grader, expires_at=now + lease)],
        update_conflicts=True,
        unique_fields=["image", "grader"],
        update_fields=["expires_at"],
    )


def _claim_try(*, image_id: int, grader: User, skip_locked: bool, now: dt.datetime) -> Image | None:
    with transaction.atomic():
        image = (
            Image.objects.select_for_update(skip_locked=skip_locked, of=("self",))
            .filter(pk=image_id)
            .first()
        )
        if image is None:
            return None  # being claimed by someone else right now (or deleted)
        # Re-check after taking the lock, in a new statement: under READ COMMITTED it sees claims
        # committed by whoever held the lock before us.
        if not images_needing_grade(grader=grader, now=now).filter(pk=image_id).exists():
            return None
        _claim_write(image=image, grader=grader, now=now)
        return image


def _claim_first(
    *, source: QuerySet, grader: User, now: dt.datetime, skip_locked: bool = True
) -> tuple[Image | None, int | None]:
    """Lock and claim the first image of ``source`` that nobody is claiming at this moment (with
    ``skip_locked=False``: waiting for the claim in progress on it, if any, to finish).

    Returns (image, None) when claimed, (None, image_id) when the image was taken in the instant
    between our snapshot and our lock (try again without it), (None, None) when the source is empty.
    """
    with transaction.atomic():
        # Locks the row the walk stopped on (the image, or its prediction for "uncertain"): a
        # clinician claiming the same image right now holds it, and we move on to the next one.
        image_id = source.select_for_update(skip_locked=skip_locked, of=("self",)).first()
        if image_id is None:
            return None, None
        # Re-check in a new statement: under READ COMMITTED it sees claims committed by whoever
        # held the lock before us.
        if not images_needing_grade(grader=grader, now=now).filter(pk=image_id).exists():
            return None, image_id
        image = Image.objects.get(pk=image_id)
        _claim_write(image=image, grader=grader, now=now)
        return image, None


def claim_next(
    *,
    grader: User,
    order: str,
    seed: str = "",
    exclude_ids: Collection[int] = (),
) -> Image | None:
    """Claim the next image for this clinician and return it, or None when nothing is left.

    An image the clinician already holds (opened but not graded) comes first, so reloading or
    coming back after a break does not leave claims behind that block other graders. Otherwise the
    first free image in queue order is locked with ``FOR UPDATE SKIP LOCKED`` in the query that
    finds it (an index walk that stops at the first match), so fifty clinicians pressing "Next" at
    once each get a different image without scanning the queue.
    """
    now = timezone.now()
    claims_expired_sweep(now=now)
    excluded = set(exclude_ids)
    for image_id in claim_held(grader=grader, now=now):
        if image_id in excluded:
            continue
        image = _claim_try(image_id=image_id, grader=grader, skip_locked=True, now=now)
        if image is not None:
            return image
    raced: set[int] = set()
    skip_locked = True
    while len(raced) < MAX_CANDIDATES_TRIED:
        sources = worklist_sources(
            grader=grader, order=order, seed=seed, exclude_ids=excluded | raced, now=now
        )
        for source in sources:
            image, lost = _claim_first(
                source=source, grader=grader, now=now, skip_locked=skip_locked
            )
            if image is not None:
                return image
            if lost is not None:
                raced.add(lost)
                break
        else:
            if not skip_locked:
                return None  # every source is empty, images being claimed right now included
            # Skipping found nothing, but an image another clinician is claiming at this very
            # moment may still have a slot for us (two grades needed): walk again, waiting for
            # those short claim transactions instead of skipping them, so "nothing left" is true.
            skip_locked = False
    return None


def claim_take(*, image: Image, grader: User) -> bool:
    """Claim (or renew the lease on) one image a clinician opened directly.

    Returns False when the image does not need this clinician's grade or all its open slots are
    held by others; the caller tells the clinician instead of serving it.
    """
    now = timezone.now()
    lease = dt.timedelta(minutes=workbench_settings_get().claim_minutes)
    # Served by "Next image" a moment ago (the usual way here), or reopened within the first half
    # of the lease: the lease stands, and renewing it would cost a locked re-check of the queue.
    # A lease is only ever written while the image needs this clinician's grade, and it keeps
    # the slot from everyone else until it expires.
    if GradingClaim.objects.filter(
        image=image, grader=grader, expires_at__gt=now + lease / 2
    ).exists():
        return True
    claims_expired_sweep(now=now)
    return _claim_try(image_id=image.pk, grader=grader, skip_locked=False, now=now) is not None


def claim_release(*, image: Image, grader: User) -> None:
    GradingClaim.objects.filter(image=image, grader=grader).delete()
