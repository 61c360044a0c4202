"""Date bounds of the reads' date filters, in the current time zone."""

from __future__ import annotations

import datetime as dt

from django.utils import timezone


def day_start(day: dt.date) -> dt.datetime:
    """The first moment of ``day``: a date filter's inclusive lower bound (and, for the next
    day, its exclusive upper bound)."""
    return timezone.make_aware(dt.datetime.combine(day, dt.time.min))
