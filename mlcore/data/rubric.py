"""Lesion rubric: the findings a screening grader records, and the ICDR grade they imply.

Screening programmes grade by findings, not by impression: the grader says what lesions they see
(and where), and the grade follows from the International Clinical Diabetic Retinopathy (ICDR) scale
(Wilkinson et al., Ophthalmology 2003):

- 4 proliferative DR: neovascularisation (disc or elsewhere), or vitreous / pre-retinal haemorrhage;
- 3 severe NPDR, by the 4-2-1 rule: more than 20 intraretinal haemorrhages in each of the 4 quadrants,
  or definite venous beading in 2 or more quadrants, or prominent IRMA in 1 or more quadrant (and no
  sign of PDR);
- 2 moderate NPDR: more than just microaneurysms, but less than severe NPDR;
- 1 mild NPDR: microaneurysms only;
- 0 no apparent retinopathy.

Haemorrhages are therefore recorded per quadrant at two levels: "present" (makes the eye at least
moderate) and "severe" (20 or more in that quadrant, ETDRS standard photograph 2A: counts towards the
4 of the 4-2-1 rule). Hard exudates within one disc diameter of the fovea suggest macular oedema, which
ICDR grades separately from the retinopathy level. Laser scars are recorded (a treated eye) but do not
set a retinopathy level: ICDR has no step for it, so the grader records the grade they judge.

Pure Python (no Django): the grading app, the export and the command line share this code, and the
grading page's script mirrors ``icdr_grade_derive`` (the browser test checks both agree).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any

# Retinal quadrants, in the order the grading page shows them.
QUADRANTS: tuple[str, ...] = ("ST", "SN", "IT", "IN")
QUADRANT_NAMES: dict[str, str] = {
    "ST": "superotemporal",
    "SN": "superonasal",
    "IT": "inferotemporal",
    "IN": "inferonasal",
}

ICDR_NONE, ICDR_MILD, ICDR_MODERATE, ICDR_SEVERE, ICDR_PROLIFERATIVE = 0, 1, 2, 3, 4
ICDR_VALUES: tuple[int, ...] = (0, 1, 2, 3, 4)

# The 4-2-1 rule's three counts.
SEVERE_HAEMORRHAGE_QUADRANTS = 4
SEVERE_VENOUS_BEADING_QUADRANTS = 2
SEVERE_IRMA_QUADRANTS = 1

_QUADRANT_FIELDS = ("haemorrhages", "haemorrhages_severe", "venous_beading", "irma")


class FindingsInvalid(ValueError):
    """The findings cannot be read; the message says which entry and why."""


@dataclass(frozen=True)
class Findings:
    """What a grader saw in one photograph. Quadrant findings are sets of ``QUADRANTS`` codes."""

    microaneurysms: bool = False
    haemorrhages: frozenset[str] = frozenset()
    haemorrhages_severe: frozenset[str] = frozenset()
    venous_beading: frozenset[str] = frozenset()
    irma: frozenset[str] = frozenset()
    nv_disc: bool = False
    nv_elsewhere: bool = False
    vitreous_preretinal_haemorrhage: bool = False
    hard_exudates: bool = False
    exudates_near_fovea: bool = False
    cotton_wool_spots: bool = False
    laser_scars: bool = False

    def __post_init__(self) -> None:
        for name in _QUADRANT_FIELDS:
            value = frozenset(getattr(self, name))
            unknown = value - set(QUADRANTS)
            if unknown:
                raise FindingsInvalid(
                    f"{name}: unknown quadrant(s) {sorted(unknown)}; use {', '.join(QUADRANTS)}."
                )
            object.__setattr__(self, name, value)
        # A quadrant with 20+ haemorrhages has haemorrhages; exudates near the fovea are exudates.
        object.__setattr__(self, "haemorrhages", self.haemorrhages | self.haemorrhages_severe)
        if self.exudates_near_fovea:
            object.__setattr__(self, "hard_exudates", True)

    @property
    def is_empty(self) -> bool:
        return self == Findings()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, quadrants in page order; only what was seen (an empty dict: nothing)."""
        out: dict[str, Any] = {}
        for spec in fields(self):
            value = getattr(self, spec.name)
            if spec.name in _QUADRANT_FIELDS:
                if value:
                    out[spec.name] = [q for q in QUADRANTS if q in value]
            elif value:
                out[spec.name] = True
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Findings:
        if not data:
            return cls()
        known = {spec.name for spec in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise FindingsInvalid(f"unknown finding(s): {', '.join(sorted(unknown))}.")
        values: dict[str, Any] = {}
        for name, value in data.items():
            if name in _QUADRANT_FIELDS:
                if isinstance(value, str) or not isinstance(value, Iterable):
                    raise FindingsInvalid(f"{name}: expected a list of quadrants.")
                values[name] = frozenset(value)
            else:
                if not isinstance(value, bool):
                    raise FindingsInvalid(f"{name}: expected true or false.")
                values[name] = value
        return cls(**values)


@dataclass(frozen=True)
class DerivedGrade:
    """The ICDR grade the findings imply and the branch of the rule that decided it, in words."""

    grade: int
    reason: str


def _quadrant_text(quadrants: frozenset[str]) -> str:
    return ", ".join(q for q in QUADRANTS if q in quadrants)


def icdr_grade_derive(findings: Findings) -> DerivedGrade:
    """The ICDR retinopathy level of these findings (see the module docstring for the rule)."""
    if findings.nv_disc or findings.nv_elsewhere:
        return DerivedGrade(ICDR_PROLIFERATIVE, "proliferative: neovascularisation")
    if findings.vitreous_preretinal_haemorrhage:
        return DerivedGrade(ICDR_PROLIFERATIVE, "proliferative: vitreous / pre-retinal haemorrhage")
    if len(findings.haemorrhages_severe) >= SEVERE_HAEMORRHAGE_QUADRANTS:
        return DerivedGrade(ICDR_SEVERE, "severe (4-2-1): 20+ haemorrhages in all 4 quadrants")
    if len(findings.venous_beading) >= SEVERE_VENOUS_BEADING_QUADRANTS:
        return DerivedGrade(
            ICDR_SEVERE,
            f"severe (4-2-1): venous beading in {len(findings.venous_beading)} quadrants",
        )
    if len(findings.irma) >= SEVERE_IRMA_QUADRANTS:
        return DerivedGrade(ICDR_SEVERE, f"severe (4-2-1): IRMA in {_quadrant_text(findings.irma)}")
    beyond_microaneurysms = [
        label
        for label, seen in (
            ("haemorrhages", bool(findings.haemorrhages)),
            ("venous beading", bool(findings.venous_beading)),
            ("hard exudates", findings.hard_exudates),
            ("cotton-wool spots", findings.cotton_wool_spots),
        )
        if seen
    ]
    if beyond_microaneurysms:
        return DerivedGrade(
            ICDR_MODERATE,
            f"moderate: more than microaneurysms ({', '.join(beyond_microaneurysms)})",
        )
    if findings.microaneurysms:
        return DerivedGrade(ICDR_MILD, "mild: microaneurysms only")
    return DerivedGrade(ICDR_NONE, "no apparent retinopathy")


def macular_oedema_suggested(findings: Findings) -> bool:
    """Hard exudates within one disc diameter of the fovea: a surrogate of macular oedema on a
    photograph (no OCT), so the grading page ticks "macular oedema" for the grader to confirm."""
    return findings.exudates_near_fovea


def findings_describe(findings: Findings) -> str:
    """One line for the image history and exports, e.g. "MA; haem ST, SN (20+: ST); CWS"."""
    parts: list[str] = []
    if findings.microaneurysms:
        parts.append("MA")
    if findings.haemorrhages:
        text = f"haem {_quadrant_text(findings.haemorrhages)}"
        if findings.haemorrhages_severe:
            text += f" (20+: {_quadrant_text(findings.haemorrhages_severe)})"
        parts.append(text)
    if findings.venous_beading:
        parts.append(f"VB {_quadrant_text(findings.venous_beading)}")
    if findings.irma:
        parts.append(f"IRMA {_quadrant_text(findings.irma)}")
    if findings.nv_disc:
        parts.append("NVD")
    if findings.nv_elsewhere:
        parts.append("NVE")
    if findings.vitreous_preretinal_haemorrhage:
        parts.append("vitreous/pre-retinal haem")
    if findings.hard_exudates:
        parts.append("HE within 1 DD of fovea" if findings.exudates_near_fovea else "HE")
    if findings.cotton_wool_spots:
        parts.append("CWS")
    if findings.laser_scars:
        parts.append("laser scars")
    return "; ".join(parts) if parts else "no lesions"
