"""Writes for the certification (gold) set: build a stratified set from confirmed images, add and
remove images. The reference grade is the image's confirmed grade at the time it is added."""

from __future__ import annotations

import hashlib
from collections import defaultdict

from django.contrib.auth.models import User
from django.db import transaction

from grading.models import CertificationItem, Image
from grading.request_memo import request_memo_forget
from grading.selectors.certification import CERTIFICATION_IDS_MEMO_KEY


class CertificationSetError(ValueError):
    """The set cannot be built as asked; the message says why."""


def _stable_key(seed: str, image_id: int) -> str:
    return hashlib.sha256(f"{seed}:{image_id}".encode()).hexdigest()


def _stratified_pick(by_grade: dict[int, list[int]], size: int) -> list[int]:
    """Equal shares per grade (a rare grade gets as many reference images as a common one, so
    sensitivity for severe disease is measured on more than a handful), the shortfall of small
    grades handed on to the others."""
    picked: list[int] = []
    remaining = {grade: list(ids) for grade, ids in by_grade.items() if ids}
    while len(picked) < size and remaining:
        share = max(1, (size - len(picked)) // len(remaining))
        for grade in sorted(remaining):
            take = remaining[grade][: min(share, size - len(picked))]
            picked += take
            remaining[grade] = remaining[grade][len(take) :]
        remaining = {grade: ids for grade, ids in remaining.items() if ids}
    return picked


def certification_set_build(
    *,
    size: int,
    source: str = "",
    added_by: User | None = None,
    seed: str = "certification",
) -> list[CertificationItem]:
    """Add up to ``size`` confirmed, gradable images (from the import ``source`` if given),
    stratified by confirmed grade, to the certification set. Returns the items added."""
    if size < 1:
        raise CertificationSetError("A certification set needs at least one image.")
    candidates = Image.objects.filter(
        grading_state=Image.GradingState.CONFIRMED,
        confirmed_ungradable=False,
        confirmed_grade__isnull=False,
        certification_item__isnull=True,
    )
    if source:
        candidates = candidates.filter(source=source)
    by_grade: dict[int, list[int]] = defaultdict(list)
    for image_id, grade in candidates.values_list("id", "confirmed_grade_id"):
        by_grade[grade].append(image_id)
    if not by_grade:
        raise CertificationSetError(
            "No confirmed, gradable images to build a certification set from"
            + (f" (source {source!r})." if source else ".")
        )
    for ids in by_grade.values():
        ids.sort(key=lambda image_id: _stable_key(seed, image_id))
    chosen = _stratified_pick(by_grade, size)
    return certification_items_add(image_ids=chosen, added_by=added_by)


def certification_items_add(
    *, image_ids: list[int], added_by: User | None = None
) -> list[CertificationItem]:
    """Mark confirmed, gradable images as certification images, their confirmed grade as the
    reference. Images already in the set are left as they are."""
    with transaction.atomic():
        images = Image.objects.select_for_update().filter(pk__in=image_ids)
        unusable = [
            image.pk
            for image in images
            if image.grading_state != Image.GradingState.CONFIRMED
            or image.confirmed_grade_id is None
        ]
        if unusable:
            raise CertificationSetError(
                f"Image(s) {', '.join(map(str, unusable))} have no confirmed grade to serve as "
                "the reference."
            )
        existing = set(
            CertificationItem.objects.filter(image_id__in=image_ids).values_list(
                "image_id", flat=True
            )
        )
        items = [
            CertificationItem(
                image=image,
                reference_grade_id=image.confirmed_grade_id,
                reference_macular_oedema=image.confirmed_macular_oedema,
                added_by=added_by,
            )
            for image in images
            # Every image has a confirmed grade (checked above); the test tells the type checker.
            if image.pk not in existing and image.confirmed_grade_id is not None
        ]
        created = CertificationItem.objects.bulk_create(items)
    request_memo_forget(CERTIFICATION_IDS_MEMO_KEY)
    return created
