"""Reads for the grader agreement review: each clinician's latest independent grades against
the confirmed grades, with what each comparison is based on (``grade_basis``).

The figures come from ``mlcore.evaluation.metrics``, as the model review's do.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from django.contrib.auth import get_user_model
from django.db.models import Case, CharField, Count, Exists, F, OuterRef, Q, QuerySet, Value, When

from grading.models import Grade, Image
from grading.selectors.dates import day_start
from grading.selectors.grading_scale import Scale, scale_get
from grading.selectors.review_cache import review_cached
from mlcore.evaluation import metrics as mlmetrics

Reference = Literal["final", "independent"]

# How the confirmed grade relates to one grader's grade of the same image.
BASIS_IMPORT = "import"  # an imported reference grade: independent of every grader
BASIS_ADJUDICATION = "adjudication"  # set by an adjudicator (someone else)
BASIS_AGREEMENT = "agreement"  # this grader and a second, independent grader agreed
BASIS_AFTER = "after_confirmation"  # graded after the image was already confirmed
BASIS_OWN_SINGLE = "own_single"  # this grader's grade alone confirmed the image: circular
BASIS_OWN_ADJUDICATION = "own_adjudication"  # this grader also adjudicated the image: circular

BASIS_LABELS: dict[str, str] = {
    BASIS_IMPORT: "imported reference",
    BASIS_ADJUDICATION: "adjudicated",
    BASIS_AGREEMENT: "second grader agreed",
    BASIS_AFTER: "graded after confirmation",
    BASIS_OWN_SINGLE: "own single grade (excluded)",
    BASIS_OWN_ADJUDICATION: "own adjudication (excluded)",
}
# Which relations count as a reference for the grader, per reference policy.
REFERENCE_BASES: dict[str, frozenset[str]] = {
    "final": frozenset({BASIS_IMPORT, BASIS_ADJUDICATION, BASIS_AGREEMENT, BASIS_AFTER}),
    "independent": frozenset({BASIS_IMPORT, BASIS_ADJUDICATION, BASIS_AFTER}),
}


def grade_basis(
    *,
    grader_id: int,
    graded_at: dt.datetime,
    confirmation_method: str,
    confirmed_by_id: int | None,
    confirmed_at: dt.datetime | None,
) -> str:
    """How an image's confirmed grade relates to one grader's independent grade of it."""
    method = Image.ConfirmationMethod
    if confirmation_method == method.IMPORT:
        return BASIS_IMPORT
    if confirmation_method == method.ADJUDICATION:
        return BASIS_OWN_ADJUDICATION if confirmed_by_id == grader_id else BASIS_ADJUDICATION
    if confirmed_at is not None and graded_at > confirmed_at:
        return BASIS_AFTER
    if confirmation_method == method.AGREEMENT:
        return BASIS_AGREEMENT
    return BASIS_OWN_SINGLE


@dataclass
class GraderAgreement:
    grader_id: int
    grader_name: str
    n: int
    report: dict[str, Any] | None
    basis_counts: dict[str, int]
    excluded: int
    ungradable_mismatches: int

    @property
    def qwk(self) -> float | None:
        return self.report["qwk"] if self.report else None

    @property
    def accuracy(self) -> float | None:
        return self.report["accuracy"] if self.report else None

    @property
    def sensitivity(self) -> float | None:
        return self.report["referable"]["sensitivity"] if self.report else None

    @property
    def specificity(self) -> float | None:
        return self.report["referable"]["specificity"] if self.report else None

    @property
    def basis_summary(self) -> list[tuple[str, int]]:
        return [(BASIS_LABELS[key], n) for key, n in sorted(self.basis_counts.items()) if n]


def _basis_case() -> Case:
    """``grade_basis`` in SQL, for a grade row joined to its image (same rules, same order)."""
    method = Image.ConfirmationMethod
    return Case(
        When(image__confirmation_method=method.IMPORT, then=Value(BASIS_IMPORT)),
        When(
            image__confirmation_method=method.ADJUDICATION,
            image__confirmed_by_id=F("grader_id"),
            then=Value(BASIS_OWN_ADJUDICATION),
        ),
        When(image__confirmation_method=method.ADJUDICATION, then=Value(BASIS_ADJUDICATION)),
        When(
            image__confirmed_at__isnull=False,
            created_at__gt=F("image__confirmed_at"),
            then=Value(BASIS_AFTER),
        ),
        When(image__confirmation_method=method.AGREEMENT, then=Value(BASIS_AGREEMENT)),
        default=Value(BASIS_OWN_SINGLE),
        output_field=CharField(),
    )


def _grader_grade_counts(*, date_from: dt.date | None, date_to: dt.date | None) -> QuerySet:
    """Each grader's latest non-superseded independent grade of each confirmed image, counted by
    (grader, basis, grade, confirmed grade, ungradable flags) in the database."""
    queryset = Grade.objects.filter(
        kind=Grade.Kind.GRADER,
        grader__isnull=False,
        superseded_by__isnull=True,
        image__grading_state=Image.GradingState.CONFIRMED,
    )
    if date_from is not None:
        queryset = queryset.filter(created_at__gte=day_start(date_from))
    if date_to is not None:
        queryset = queryset.filter(created_at__lt=day_start(date_to + dt.timedelta(days=1)))
    newer_by_same_grader = Grade.objects.filter(
        image=OuterRef("image_id"),
        grader=OuterRef("grader_id"),
        kind=Grade.Kind.GRADER,
        superseded_by__isnull=True,
    ).filter(
        Q(created_at__gt=OuterRef("created_at"))
        | Q(created_at=OuterRef("created_at"), pk__gt=OuterRef("pk"))
    )
    if date_to is not None:
        newer_by_same_grader = newer_by_same_grader.filter(
            created_at__lt=day_start(date_to + dt.timedelta(days=1))
        )
    fields = (
        "grader_id",
        "basis",
        "grade_id",
        "ungradable",
        "image__confirmed_grade_id",
        "image__confirmed_ungradable",
    )
    return (
        queryset.filter(~Exists(newer_by_same_grader))
        .order_by()
        .annotate(basis=_basis_case())
        .values(*fields)
        .annotate(n=Count("pk"))
        .values_list(*fields, "n")
    )


def grader_agreement(
    *,
    reference: Reference = "final",
    date_from: dt.date | None = None,
    date_to: dt.date | None = None,
    scale: Scale | None = None,
) -> list[GraderAgreement]:
    """Each clinician's latest independent grade of each confirmed image against its confirmed grade.

    A grade that was itself the only basis of the confirmed grade (single grading, or the grader's own
    adjudication) is always left out: comparing it with the confirmed grade would be circular.
    ``reference="final"`` compares with the final grade of every other image, as screening programmes
    do (double-graded images where the second grader agreed count as agreement);
    ``reference="independent"`` keeps only references the grader had no part in (imported reference
    grades, adjudications by someone else, images graded after confirmation).
    """
    if reference not in REFERENCE_BASES:
        raise ValueError(f"reference must be one of {sorted(REFERENCE_BASES)}, got {reference!r}")
    scale = scale or scale_get()
    key = (reference, date_from, date_to, tuple((v.value, v.is_referable) for v in scale.levels))
    return review_cached(
        "graders",
        key,
        lambda: _grader_agreement(
            reference=reference, date_from=date_from, date_to=date_to, scale=scale
        ),
    )


def _grader_agreement(
    *, reference: Reference, date_from: dt.date | None, date_to: dt.date | None, scale: Scale
) -> list[GraderAgreement]:
    accepted = REFERENCE_BASES[reference]
    position = {value: i for i, value in enumerate(scale.classes)}
    per_grader: dict[int, dict[str, Any]] = {}
    for (
        grader_id,
        basis,
        grade,
        ungradable,
        confirmed,
        confirmed_ungradable,
        count,
    ) in _grader_grade_counts(date_from=date_from, date_to=date_to):
        entry = per_grader.setdefault(
            grader_id,
            {
                "matrix": np.zeros((len(scale.classes),) * 2, dtype=np.int64),
                "basis": defaultdict(int),
                "excluded": 0,
                "ungradable": 0,
            },
        )
        if basis not in accepted:
            entry["excluded"] += count
            continue
        if ungradable or confirmed_ungradable:
            # Not on the ordinal scale: counted, but outside QWK and sensitivity.
            if ungradable != confirmed_ungradable:
                entry["ungradable"] += count
            continue
        entry["matrix"][position[confirmed], position[grade]] += count
        entry["basis"][basis] += count
    names = dict(get_user_model().objects.filter(pk__in=per_grader).values_list("pk", "username"))
    results = [
        GraderAgreement(
            grader_id=grader_id,
            grader_name=names.get(grader_id, f"user #{grader_id}"),
            n=int(entry["matrix"].sum()),
            report=mlmetrics.metrics_report_from_confusion(
                entry["matrix"], classes=scale.classes, referable_from=scale.referable_from
            )
            if entry["matrix"].sum()
            else None,
            basis_counts=dict(entry["basis"]),
            excluded=entry["excluded"],
            ungradable_mismatches=entry["ungradable"],
        )
        for grader_id, entry in per_grader.items()
    ]
    return sorted(results, key=lambda result: result.grader_name)
