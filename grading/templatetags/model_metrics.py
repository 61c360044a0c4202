"""Formatting of model metrics and job durations for the registry and jobs pages."""

from __future__ import annotations

import datetime as dt
import math

from django import template

register = template.Library()

MISSING = "—"


def _number(value: object) -> float | None:
    # Templates hand over None, "" (a missing variable) or a number.
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


@register.filter
def metric(value: float | None, digits: int = 3) -> str:
    """A metric with ``digits`` decimals, or a dash when it is undefined (None or NaN)."""
    number = _number(value)
    return MISSING if number is None else f"{number:.{int(digits)}f}"


@register.filter
def percent(value: float | None) -> str:
    number = _number(value)
    return MISSING if number is None else f"{100 * number:.1f} %"


@register.filter
def duration(value: dt.timedelta | None) -> str:
    """``1 h 02 min``, ``3 min 05 s`` or ``12 s``."""
    if value is None:
        return MISSING
    seconds = max(0, int(value.total_seconds()))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {seconds:02d} s"
    return f"{seconds} s"


@register.filter
def lookup(mapping: dict, key: object) -> object:
    if not mapping:
        return None
    return mapping.get(key, mapping.get(str(key)))


@register.filter
def interval(value: list[float] | None, style: str = "metric") -> str:
    """A 95 % interval ``[low, high]`` as ``0.801–0.846`` (``style="percent"``: ``80.1–84.6 %``),
    or an empty string when there is none."""
    if not value or len(value) != 2:
        return ""
    low, high = (_number(bound) for bound in value)
    if low is None or high is None:
        return ""
    if style == "percent":
        return f"{100 * low:.1f}–{100 * high:.1f} %"
    return f"{low:.3f}–{high:.3f}"


@register.filter
def signed(value: float | None, digits: int = 3) -> str:
    """A difference with its sign (``+0.012``, ``−0.030``)."""
    number = _number(value)
    if number is None:
        return MISSING
    text = f"{abs(number):.{int(digits)}f}"
    return f"+{text}" if number >= 0 else f"−{text}"
