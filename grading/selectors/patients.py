"""Reads about patients: search, both eyes over time, and whether the patient needs referral.

Referable status follows the usual screening rule: the patient is referable when the *worse* eye's
latest confirmed grade is a referable grade (``GradeLevel.is_referable``, ICDR >= 2) or either eye's
latest confirmed grade records macular oedema. Only confirmed grades count; a pending image says
nothing yet.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection
from dataclasses import dataclass, field

from django.db.models import Count, Max, Q, QuerySet

from grading.models import GradeLevel, Image, Patient

EYE_ORDER = (Image.Eye.RIGHT, Image.Eye.LEFT, Image.Eye.UNKNOWN)


@dataclass(frozen=True)
class ReferableStatus:
    latest_by_eye: dict[str, Image] = field(default_factory=dict)
    worse_grade: GradeLevel | None = None
    macular_oedema: bool = False
    ungradable_eyes: tuple[str, ...] = ()

    @property
    def known(self) -> bool:
        return bool(self.latest_by_eye)

    @property
    def referable(self) -> bool:
        return self.macular_oedema or (
            self.worse_grade is not None and self.worse_grade.is_referable
        )

    @property
    def label(self) -> str:
        if not self.known:
            return "No confirmed grade yet"
        if self.referable:
            return "Referable"
        if self.ungradable_eyes and self.worse_grade is None:
            return "Ungradable: re-image"
        return "Not referable"

    @property
    def reasons(self) -> list[str]:
        reasons = []
        if self.worse_grade is not None and self.worse_grade.is_referable:
            reasons.append(f"worse eye grade {self.worse_grade}")
        if self.macular_oedema:
            reasons.append("macular oedema")
        if self.ungradable_eyes:
            names = ", ".join(Image.Eye(eye).label.lower() for eye in self.ungradable_eyes)
            reasons.append(f"latest image ungradable ({names} eye)")
        return reasons


def _latest_first(images: list[Image]) -> list[Image]:
    # Photographs without an acquisition date sort by when they were uploaded.
    return sorted(
        images,
        key=lambda image: (
            image.acquired_on or image.uploaded_at.date(),
            image.uploaded_at,
            image.pk,
        ),
        reverse=True,
    )


def _status_from(images: list[Image]) -> ReferableStatus:
    latest_by_eye: dict[str, Image] = {}
    for image in _latest_first(images):
        latest_by_eye.setdefault(image.eye, image)
    levels = [
        image.confirmed_grade
        for image in latest_by_eye.values()
        if image.confirmed_grade is not None
    ]
    worse = max(levels, key=lambda level: level.value, default=None)
    return ReferableStatus(
        latest_by_eye={eye: latest_by_eye[eye] for eye in EYE_ORDER if eye in latest_by_eye},
        worse_grade=worse,
        macular_oedema=any(image.confirmed_macular_oedema for image in latest_by_eye.values()),
        ungradable_eyes=tuple(
            eye
            for eye in EYE_ORDER
            if eye in latest_by_eye and latest_by_eye[eye].confirmed_ungradable
        ),
    )


def images_reference_mask(images: list[Image], hidden_image_ids: Collection[int]) -> list[Image]:
    """Mark the certification images whose reference the viewer may not see yet (the badge
    template shows "Certification" instead of their confirmed grade)."""
    hidden = set(hidden_image_ids)
    for image in images:
        image.reference_hidden = image.pk in hidden
    return images


def patients_referable_status(
    *, patient_ids: Collection[int], hidden_image_ids: Collection[int] = ()
) -> dict[int, ReferableStatus]:
    """``hidden_image_ids``: certification images left out (their grade is the viewer's test)."""
    confirmed = (
        Image.objects.filter(
            patient_id__in=list(patient_ids), grading_state=Image.GradingState.CONFIRMED
        )
        .exclude(pk__in=list(hidden_image_ids))
        .select_related("confirmed_grade")
    )
    by_patient: dict[int, list[Image]] = {patient_id: [] for patient_id in patient_ids}
    for image in confirmed:
        by_patient[image.patient_id].append(image)
    return {patient_id: _status_from(images) for patient_id, images in by_patient.items()}


def patient_referable_status(
    *, patient: Patient, hidden_image_ids: Collection[int] = ()
) -> ReferableStatus:
    return patients_referable_status(patient_ids=[patient.pk], hidden_image_ids=hidden_image_ids)[
        patient.pk
    ]


def patients_search(*, query: str = "") -> QuerySet[Patient]:
    """Patients whose pseudonym contains the query, by pseudonym (page it, then add
    ``patients_with_counts`` to the page: counting every patient's images to show 25 is wasted)."""
    patients = Patient.objects.all()
    query = query.strip()
    if query:
        patients = patients.filter(pseudonym__icontains=query)
    return patients.order_by("pseudonym")


def patients_with_counts(*, patients: Collection[Patient]) -> list[Patient]:
    """These patients, in the same order, with image counts and the last visit and upload."""
    ids = [patient.pk for patient in patients]
    counted = Patient.objects.filter(pk__in=ids).annotate(
        image_count=Count("images", distinct=True),
        pending_count=Count(
            "images",
            filter=~Q(images__grading_state=Image.GradingState.CONFIRMED),
            distinct=True,
        ),
        last_visit=Max("images__acquired_on"),
        last_upload=Max("images__uploaded_at"),
    )
    by_id = {patient.pk: patient for patient in counted}
    return [by_id[pk] for pk in ids if pk in by_id]


@dataclass(frozen=True)
class EyeTimeline:
    eye: str
    label: str
    images: list[Image]


def patient_eyes_timeline(
    *, patient: Patient, hidden_image_ids: Collection[int] = ()
) -> list[EyeTimeline]:
    """Each eye's photographs, most recent first (eyes without photographs left out)."""
    images = images_reference_mask(
        list(patient.images.select_related("confirmed_grade").order_by("-acquired_on", "-id")),
        hidden_image_ids,
    )
    timelines = []
    for eye in EYE_ORDER:
        eye_images = _latest_first([image for image in images if image.eye == eye])
        if eye_images or eye != Image.Eye.UNKNOWN:
            timelines.append(EyeTimeline(eye=eye, label=Image.Eye(eye).label, images=eye_images))
    return timelines


@dataclass(frozen=True)
class Visit:
    """The photographs of one patient taken on one day (both eyes); ``day`` None: date unknown."""

    day: dt.date | None
    images: list[Image]


@dataclass(frozen=True)
class PatientContext:
    patient: Patient
    this_visit: list[Image]  # the patient's other photographs of the same day, either eye
    other_visits: list[Visit]  # the other days, most recent first
    status: ReferableStatus


def patient_context_for(
    *, image: Image, limit: int = 8, hidden_image_ids: Collection[int] = ()
) -> PatientContext:
    """What a grader sees beside the photograph: the rest of this visit (same day, either eye:
    the other eye, or a retake of this one) and the other visits grouped by day, with their
    confirmed grades only (never another clinician's grade of a photograph still being graded,
    nor the reference grade of a certification image they have still to grade).
    A photograph without a date is never assumed to belong to this visit.

    Beside a certification image whose reference is hidden, no photograph of the patient shows
    its grade: the other eye's, or a retake's, would hint at the reference."""
    # Every photograph of the patient in one query: the visits and the referable status both
    # come from it (a patient has a handful of photographs, not thousands).
    patient_images = list(
        Image.objects.filter(patient_id=image.patient_id).select_related("confirmed_grade")
    )
    if image.pk in hidden_image_ids:
        hidden_image_ids = {other.pk for other in patient_images}
    hidden = set(hidden_image_ids)
    others = _latest_first(
        images_reference_mask(
            [other for other in patient_images if other.pk != image.pk], hidden_image_ids
        )
    )
    this_visit = [
        other
        for other in others
        if image.acquired_on is not None and other.acquired_on == image.acquired_on
    ]
    by_day: dict[dt.date | None, list[Image]] = {}
    for other in others:
        if other not in this_visit and sum(map(len, by_day.values())) < limit:
            by_day.setdefault(other.acquired_on, []).append(other)
    # Eyes in a fixed order within a day: right (OD) before left (OS), as on the patient page.
    eye_rank: dict[str, int] = {eye: rank for rank, eye in enumerate(EYE_ORDER)}
    return PatientContext(
        patient=image.patient,
        this_visit=sorted(this_visit, key=lambda other: eye_rank.get(other.eye, 9)),
        other_visits=[
            Visit(day=day, images=sorted(images, key=lambda other: eye_rank.get(other.eye, 9)))
            for day, images in by_day.items()
        ],
        status=_status_from(
            [
                other
                for other in patient_images
                if other.grading_state == Image.GradingState.CONFIRMED and other.pk not in hidden
            ]
        ),
    )
