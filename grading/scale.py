"""The grading scale: parse the FUNDUS_GRADE_SCALE setting and read the GradeLevel table."""

from __future__ import annotations

from dataclasses import dataclass

from django.core.exceptions import ImproperlyConfigured


@dataclass(frozen=True)
class ScaleLevel:
    value: int
    name: str
    is_referable: bool


def grade_scale_parse(text: str) -> list[ScaleLevel]:
    """Parse ``"0:No DR,1:Mild NPDR,2:Moderate NPDR:referable,..."``."""
    levels: list[ScaleLevel] = []
    for item in text.split(","):
        parts = [part.strip() for part in item.split(":")]
        if len(parts) not in (2, 3) or not parts[0].isdigit() or not parts[1]:
            raise ImproperlyConfigured(
                f"FUNDUS_GRADE_SCALE entry {item!r} must look like 'value:name' or 'value:name:referable'"
            )
        if len(parts) == 3 and parts[2] != "referable":
            raise ImproperlyConfigured(
                f"FUNDUS_GRADE_SCALE entry {item!r}: third part must be 'referable'"
            )
        levels.append(ScaleLevel(int(parts[0]), parts[1], len(parts) == 3))
    values = [level.value for level in levels]
    if len(set(values)) != len(values) or len(levels) < 2:
        raise ImproperlyConfigured("FUNDUS_GRADE_SCALE needs at least two distinct grade values")
    return sorted(levels, key=lambda level: level.value)
