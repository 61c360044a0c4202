"""The grading scale as reads use it: the GradeLevel table in order, its classes, its first
referable grade and its labels."""

from __future__ import annotations

from dataclasses import dataclass

from grading.models import GradeLevel
from mlcore.evaluation import metrics as mlmetrics


@dataclass(frozen=True)
class Scale:
    levels: tuple[GradeLevel, ...]

    @property
    def classes(self) -> list[int]:
        return [level.value for level in self.levels]

    @property
    def referable_from(self) -> int:
        """The lowest grade flagged referable (ICDR: 2, moderate NPDR)."""
        referable = [level.value for level in self.levels if level.is_referable]
        return min(referable) if referable else mlmetrics.REFERABLE_FROM

    def label(self, value: int | None) -> str:
        for level in self.levels:
            if level.value == value:
                return level.name
        return "" if value is None else str(value)


def scale_get() -> Scale:
    return Scale(levels=tuple(GradeLevel.objects.order_by("value")))
