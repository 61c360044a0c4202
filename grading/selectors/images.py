"""Reads about images and patients."""

from __future__ import annotations

from django.db.models import Count, Q

from grading.models import Image


def image_counts() -> dict[str, int]:
    return Image.objects.aggregate(
        total=Count("id"),
        pending=Count("id", filter=Q(grading_state=Image.GradingState.PENDING)),
        adjudication=Count("id", filter=Q(grading_state=Image.GradingState.ADJUDICATION)),
        confirmed=Count("id", filter=Q(grading_state=Image.GradingState.CONFIRMED)),
    )
