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
        number = float(value)  # type: ignore[arg-type]  # whatever float() refuses is caught below
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
def interval(value: list[float] | None, style: str = "metric") -> str:
    """A 95 % interval ``[low, high]`` as ``[0.801, 0.846]`` (``style="percent"``:
    ``[80.1, 84.6] %``), or an empty string when there is none. Brackets and a comma, because a
    dash between two negative bounds read "-0.134–-0.005"."""
    if not value or len(value) != 2:
        return ""
    low, high = (_number(bound) for bound in value)
    if low is None or high is None:
        return ""
    if style == "percent":
        return f"[{100 * low:.1f}, {100 * high:.1f}] %"
    return f"[{low:.3f}, {high:.3f}]"


@register.filter
def signed(value: float | None, digits: int = 3) -> str:
    """A difference with its sign (``+0.012``, ``−0.030``)."""
    number = _number(value)
    if number is None:
        return MISSING
    text = f"{abs(number):.{int(digits)}f}"
    return f"+{text}" if number >= 0 else f"−{text}"


# Job parameters and results: a readable table instead of a printed Python dict. Known keys get a
# label; a key added later still shows, with its name made readable.
JOB_FIELD_LABELS = {
    "images": "Images",
    "image_ids": "Images",
    "computed": "Features computed now",
    "reused": "Features reused from the store",
    "seconds": "Time",
    "model_version": "Model version",
    "model_versions": "Model versions",
    "model_version_id": "Model version id",
    "auto_activated": "Activated automatically",
    "holdout": "Hold-out images",
    "n_train": "Training images",
    "trigger": "Started",
    "new_confirmed": "New confirmed grades since the last model",
    "activate_if_first": "Activate if it is the first model",
    "variants": "Augmented copies per image",
    "predicted": "Images predicted",
    "skipped": "Skipped",
}
# Shown elsewhere on the page (the message line, the model version link).
JOB_FIELDS_HIDDEN = {"message"}
LIST_PREVIEW = 10


def _job_value_text(key: str, value: object) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if value is None or value == "":
        return MISSING
    if key == "seconds" and (seconds := _number(value)) is not None:
        return duration(dt.timedelta(seconds=seconds))
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_job_value_text(str(k), v)}" for k, v in value.items()) or MISSING
    if isinstance(value, list | tuple):
        items = [str(item) for item in value]
        shown = ", ".join(
            ("#" + item if key == "image_ids" else item) for item in items[:LIST_PREVIEW]
        )
        more = len(items) - LIST_PREVIEW
        prefix = f"{len(items)}: " if key == "image_ids" and len(items) > 1 else ""
        return prefix + (f"{shown} and {more} more" if more > 0 else shown or MISSING)
    return str(value)


@register.filter
def job_fields(data: dict | None) -> list[tuple[str, str]]:
    """``(label, text)`` rows of a job's parameters or result, for a two-column table."""
    if not isinstance(data, dict):
        return []
    rows = []
    for key, value in data.items():
        if key in JOB_FIELDS_HIDDEN:
            continue
        label = JOB_FIELD_LABELS.get(key) or key.replace("_", " ").capitalize()
        rows.append((label, _job_value_text(key, value)))
    return rows
