"""The grading scale as reads use it: the GradeLevel table in order, its classes, its first
referable grade and its labels."""

from __future__ import annotations

from dataclasses import dataclass

from grading.models import GradeLevel
from grading.request_memo import request_memo
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

    def level_of(self, value: int | None) -> GradeLevel | None:
        for level in self.levels:
            if level.value == value:
                return level
        return None

    def label(self, value: int | None) -> str:
        level = self.level_of(value)
        if level is not None:
            return level.name
        return "" if value is None else str(value)


SCALE_MEMO_KEY = "grading_scale"


def scale_get() -> Scale:
    """The scale (read once per request: the grading page and a save consult it several times)."""
    return request_memo(
        SCALE_MEMO_KEY, lambda: Scale(levels=tuple(GradeLevel.objects.order_by("value")))
    )
