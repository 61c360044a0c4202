"""Reads for certification on a gold set: who must certify, which reference images they still have
to grade, their figures against the reference, and whether the reference may be shown to them.

A clinician (may grade, may not review agreement) is certified when they have graded every image of
the set and meet the admin's thresholds (WorkbenchSettings.certification_min_*). Reviewers and admins
see the reference (they manage the set) and are not certified here.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.contrib.auth.models import User

from grading.models import CertificationItem, Grade, GradeLevel, Image, WorkbenchSettings
from grading.request_memo import request_memo
from grading.selectors.worklist import workbench_settings_get
from mlcore.evaluation.agreement import AgreementFigures, agreement_figures

GRADE_PERMISSION = "grading.grade_image"
REVIEW_PERMISSION = "grading.review_agreement"


def certification_subject(*, user: User) -> bool:
    """Clinicians certify; reviewers and admins (who can see every grade anyway) do not."""
    return bool(
        user.is_authenticated
        and user.has_perm(GRADE_PERMISSION)
        and not user.has_perm(REVIEW_PERMISSION)
    )


CERTIFICATION_IDS_MEMO_KEY = "certification_image_ids"


def certification_image_ids() -> frozenset[int]:
    """The images of the certification set (a few dozen), read once per request: the grading
    page, "Next image" and a save each ask several times whether an image is one of them."""
    return request_memo(
        CERTIFICATION_IDS_MEMO_KEY,
        lambda: frozenset(CertificationItem.objects.values_list("image_id", flat=True)),
    )


def certification_set_size() -> int:
    return CertificationItem.objects.count()


def certification_grade_for(*, image: Image, grader: User) -> Grade | None:
    return (
        Grade.objects.filter(image=image, grader=grader, kind=Grade.Kind.CERTIFICATION)
        .select_related("grade")
        .order_by("-created_at", "-id")
        .first()
    )


def certification_item_for(*, image: Image) -> CertificationItem | None:
    if image.pk not in certification_image_ids():
        return None
    return CertificationItem.objects.filter(image=image).select_related("reference_grade").first()


def reference_hidden(*, image: Image, user: User) -> bool:
    """Whether everything that tells this image's reference (its confirmed grade, the grades that
    led to it, the model's prediction trained on it) is withheld from this user: a clinician who
    has not saved their certification grade of a certification image."""
    if not certification_subject(user=user):
        return False
    if image.pk not in certification_image_ids():
        return False
    return not Grade.objects.filter(
        image_id=image.pk, grader=user, kind=Grade.Kind.CERTIFICATION
    ).exists()


def reference_hidden_ids(*, user: User) -> set[int]:
    """The certification images whose reference is hidden from this user (for lists)."""
    if not certification_subject(user=user):
        return set()
    items = certification_image_ids()
    if not items:
        return set()
    graded = Grade.objects.filter(
        grader=user, kind=Grade.Kind.CERTIFICATION, image_id__in=items
    ).values_list("image_id", flat=True)
    return set(items) - set(graded)


def _random_key(seed: str, image_id: int) -> str:
    return hashlib.sha256(f"cert:{seed}:{image_id}".encode()).hexdigest()


def certification_pending_ids(*, grader: User, seed: str = "") -> list[int]:
    """Certification images this clinician still has to grade, shuffled per clinician (the set is
    stratified by grade: in import order the grades would come in runs)."""
    if not certification_subject(user=grader):
        return []
    ids = list(reference_hidden_ids(user=grader))
    return sorted(ids, key=lambda image_id: _random_key(seed or str(grader.pk), image_id))


@dataclass(frozen=True)
class CertificationResult:
    user: User
    set_size: int
    graded: int
    figures: AgreementFigures | None
    thresholds: dict[str, float]

    @property
    def complete(self) -> bool:
        return self.set_size > 0 and self.graded >= self.set_size

    @property
    def checks(self) -> list[tuple[str, float | None, float, bool]]:
        """(figure, value, threshold, met) for each pass criterion."""
        figures = self.figures
        values = {
            "qwk": figures.qwk if figures else None,
            "sensitivity": figures.sensitivity.value if figures else None,
            "specificity": figures.specificity.value if figures else None,
            "exact": figures.exact.value if figures else None,
        }
        checks = []
        for name, threshold in self.thresholds.items():
            value = values[name]
            # A figure that cannot be computed (e.g. no referable image in the set) does not block.
            checks.append((name, value, threshold, value is None or value >= threshold))
        return checks

    @property
    def passed(self) -> bool:
        return self.complete and all(met for *_, met in self.checks)


def _thresholds(settings_row: WorkbenchSettings) -> dict[str, float]:
    return {
        "qwk": settings_row.certification_min_qwk,
        "sensitivity": settings_row.certification_min_sensitivity,
        "specificity": settings_row.certification_min_specificity,
        "exact": settings_row.certification_min_exact,
    }


def certification_result(
    *, user: User, settings_row: WorkbenchSettings | None = None
) -> CertificationResult:
    """The clinician's figures on the set so far (their first grade of each reference image)."""
    settings_row = settings_row or workbench_settings_get()
    references = dict(CertificationItem.objects.values_list("image_id", "reference_grade_id"))
    firsts: dict[int, int | None] = {}
    for image_id, grade_id in (
        Grade.objects.filter(grader=user, kind=Grade.Kind.CERTIFICATION, image_id__in=references)
        .order_by("created_at", "id")
        .values_list("image_id", "grade_id")
    ):
        firsts.setdefault(image_id, grade_id)
    classes = list(GradeLevel.objects.order_by("value").values_list("value", flat=True))
    referable = GradeLevel.objects.filter(is_referable=True).order_by("value").first()
    figures = None
    if firsts:
        image_ids = sorted(firsts)
        figures = agreement_figures(
            [references[image_id] for image_id in image_ids],
            [firsts[image_id] for image_id in image_ids],
            classes=classes,
            referable_from=referable.value if referable else classes[-1],
        )
    return CertificationResult(
        user=user,
        set_size=len(references),
        graded=len(firsts),
        figures=figures,
        thresholds=_thresholds(settings_row),
    )


def grade_counts_towards_confirmation(*, grader: User) -> bool:
    """Whether a new independent grade of this clinician counts: always, unless the admin gates on
    certification, a set exists and the clinician has not passed it."""
    settings_row = workbench_settings_get()
    if not settings_row.certification_gates_confirmation:
        return True
    if not certification_subject(user=grader) or not certification_image_ids():
        return True
    return certification_result(user=grader, settings_row=settings_row).passed


def certification_results_all() -> list[CertificationResult]:
    """Every clinician who has graded at least one certification image, by username."""
    settings_row = workbench_settings_get()
    user_ids = (
        Grade.objects.filter(kind=Grade.Kind.CERTIFICATION)
        .values_list("grader_id", flat=True)
        .distinct()
    )
    users = get_user_model().objects.filter(pk__in=list(user_ids)).order_by("username")
    return [certification_result(user=user, settings_row=settings_row) for user in users]
