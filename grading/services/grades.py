"""Writes for grades: independent grades, corrections, confirmation and adjudication.

Grades are append-only. A clinician's correction is a new row that supersedes their previous one.
After every independent grade the image's state is worked out again from the current grades:

- fewer grades than ``WorkbenchSettings.grades_required``: still pending;
- all current grades agree (same grade, same ungradable flag): confirmed, by ``single`` grader or by
  ``agreement``;
- otherwise: the image waits in the adjudication queue, where a reviewer records an adjudication
  grade that becomes the confirmed grade.

An adjudicated or imported confirmation is never overturned by a grader's later correction; the
correction is kept in the history for a reviewer to see.

Once the image needs adjudication, or once a model has given an opinion of it (which the reader
sees after saving), a correction is a ``CorrectionRequest`` with its reason, for the adjudicator: a reader who could re-confirm by agreement could find another
reader's grade by trying values, or move towards the model, and so skip adjudication.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from grading.models import CorrectionRequest, Grade, GradeLevel, Image
from grading.selectors.certification import (
    certification_image_ids,
    certification_subject,
    grade_counts_towards_confirmation,
)
from grading.selectors.corrections import (
    correction_goes_to_adjudicator,
    correction_request_open_for,
    correction_requests_open,
)
from grading.selectors.grading_scale import scale_get
from grading.selectors.worklist import grades_current, workbench_settings_get
from grading.services.claims import claim_release
from mlcore.data.rubric import Findings, icdr_grade_derive

MAX_NOTES_LENGTH = 4000


class GradeRejected(ValueError):
    """The grade cannot be recorded; the message says why, for the user."""


@dataclass(frozen=True)
class GradeInput:
    """What a clinician (or reviewer) says about one image."""

    grade: int | None
    ungradable: bool = False
    macular_oedema: bool = False
    notes: str = ""
    # The lesion rubric: None when it was not used (rubric off, or an API-style plain grade).
    findings: Findings | None = None
    override_reason: str = ""
    # Why a correction is asked for: required once a correction goes to the adjudicator.
    correction_reason: str = ""


@dataclass(frozen=True)
class GradeSaved:
    """What a grade submission did: ``grade`` is the reader's current grade; ``request`` the
    correction request it made instead of changing that grade (if it made one); ``changed``
    whether anything was written."""

    grade: Grade
    request: CorrectionRequest | None = None
    changed: bool = True
    corrected: bool = False  # it replaced the reader's earlier grade


@dataclass(frozen=True)
class RubricRecord:
    """What the grade row keeps of the rubric: the findings, the grade they imply, and why the
    grader recorded another grade (if they did)."""

    used: bool = False
    findings: dict | None = None
    derived_grade: GradeLevel | None = None
    override_reason: str = ""


def _grade_level_resolve(choice: GradeInput) -> GradeLevel | None:
    if choice.ungradable and choice.grade is not None:
        raise GradeRejected("Choose either a grade or 'ungradable', not both.")
    if not choice.ungradable and choice.grade is None:
        raise GradeRejected("Choose a grade or mark the image ungradable.")
    if choice.ungradable and choice.macular_oedema:
        raise GradeRejected(
            "An ungradable image cannot be assessed for macular oedema; clear one of the two."
        )
    if len(choice.notes) > MAX_NOTES_LENGTH:
        raise GradeRejected(f"Notes are limited to {MAX_NOTES_LENGTH} characters.")
    if choice.ungradable or choice.grade is None:  # None: ungradable, as checked above
        return None
    scale = scale_get()
    level = scale.level_of(choice.grade)
    if level is None:
        known = ", ".join(str(value) for value in scale.classes)
        raise GradeRejected(f"Grade {choice.grade} is not on the grading scale ({known}).")
    return level


def _rubric_resolve(choice: GradeInput, level: GradeLevel | None) -> RubricRecord:
    """Derive the ICDR grade from the findings; a different recorded grade needs a reason."""
    if choice.findings is None:
        return RubricRecord()
    if len(choice.override_reason) > MAX_NOTES_LENGTH:
        raise GradeRejected(f"The override reason is limited to {MAX_NOTES_LENGTH} characters.")
    if choice.ungradable:
        if not choice.findings.is_empty:
            raise GradeRejected(
                "An ungradable image has no findings; clear the findings or the ungradable mark."
            )
        return RubricRecord(used=True, findings={})
    derived = icdr_grade_derive(choice.findings)
    derived_level = scale_get().level_of(derived.grade)
    reason = choice.override_reason.strip()
    if level is not None and derived_level is not None and level.value != derived_level.value:
        if not reason:
            raise GradeRejected(
                f"The findings give grade {derived_level} ({derived.reason}). To record grade "
                f"{level} instead, give a reason for the override."
            )
    else:
        reason = ""  # no override: nothing to explain
    return RubricRecord(
        used=True,
        findings=choice.findings.to_dict(),
        derived_grade=derived_level,
        override_reason=reason,
    )


def _grades_agree(grades: list[Grade]) -> bool:
    return len({(grade.grade_id, grade.ungradable) for grade in grades}) == 1


def _grade_current(*, image: Image, kind: str, grader: User | None = None) -> Grade | None:
    """The latest grade of this kind (by this grader, if given) that no later grade corrects:
    the one a new grade of the same kind supersedes."""
    grades = Grade.objects.filter(image=image, kind=kind, superseded_by__isnull=True)
    if grader is not None:
        grades = grades.filter(grader=grader)
    return grades.order_by("-created_at", "-id").first()


def _grade_repeats(
    grade: Grade, *, level: GradeLevel | None, choice: GradeInput, rubric: RubricRecord
) -> bool:
    """Whether ``choice`` (with its rubric findings) says exactly what ``grade`` already says."""
    return (
        grade.grade_id == (level.pk if level is not None else None)
        and grade.ungradable == choice.ungradable
        and grade.macular_oedema == choice.macular_oedema
        and grade.notes == choice.notes.strip()
        and grade.rubric_used == rubric.used
        and grade.findings == (rubric.findings or {})
        and grade.override_reason == rubric.override_reason
    )


# confirmed_grade_id rather than confirmed_grade: copying them reads no related row.
_CONFIRMATION_ATTNAMES = tuple(
    field.attname
    for field in Image._meta.concrete_fields
    if field.name in Image.CONFIRMATION_FIELDS
)
_GRADE_RELATIONS = ["image", "grader", "grade", "derived_grade", "supersedes"]


def _grade_append(
    *,
    image: Image,
    kind: str,
    grader: User,
    level: GradeLevel | None,
    choice: GradeInput,
    supersedes: Grade | None,
    adjudicator_graded: bool = False,
    rubric: RubricRecord | None = None,
    counts: bool = True,
) -> Grade:
    rubric = rubric or RubricRecord()
    grade = Grade(
        image=image,
        kind=kind,
        grader=grader,
        grade=level,
        ungradable=choice.ungradable,
        macular_oedema=choice.macular_oedema,
        notes=choice.notes.strip(),
        supersedes=supersedes,
        adjudicator_graded=adjudicator_graded,
        rubric_used=rubric.used,
        findings=rubric.findings or {},
        derived_grade=rubric.derived_grade,
        override_reason=rubric.override_reason,
        counts_towards_confirmation=counts,
    )
    # The related rows were just read, and the check constraints are the database's to enforce
    # (the inputs were checked above with messages for the clinician): validate the fields' own
    # rules only, without a query per foreign key and a savepoint per constraint.
    grade.full_clean(exclude=_GRADE_RELATIONS, validate_unique=False, validate_constraints=False)
    grade.save()
    return grade


def _image_confirm(
    *,
    image: Image,
    grade_id: int | None,
    ungradable: bool,
    macular_oedema: bool,
    method: str,
    confirmed_by: User | None,
) -> None:
    image.grading_state = Image.GradingState.CONFIRMED
    image.confirmed_grade_id = None if ungradable else grade_id
    image.confirmed_ungradable = ungradable
    image.confirmed_macular_oedema = macular_oedema and not ungradable
    image.confirmation_method = method
    image.confirmed_by = confirmed_by
    image.confirmed_at = timezone.now()
    # Values set here from the code's own enums; the database's check constraints hold the
    # confirmed state consistent (a full_clean() cost 17 queries per save: foreign keys, the
    # sha256 uniqueness and every constraint of the image, none of which a confirmation touches).
    image.save(update_fields=Image.CONFIRMATION_FIELDS)


def _image_unconfirm(*, image: Image, state: str) -> None:
    image.grading_state = state
    image.confirmed_grade = None
    image.confirmed_ungradable = False
    image.confirmed_macular_oedema = False
    image.confirmation_method = Image.ConfirmationMethod.NONE
    image.confirmed_by = None
    image.confirmed_at = None
    image.save(update_fields=Image.CONFIRMATION_FIELDS)


def image_confirmation_refresh(
    *, image: Image, grades_required: int, last_grader: User | None = None
) -> None:
    """Work out the image's state from its current independent grades (call with the row locked)."""
    if image.confirmation_method in (
        Image.ConfirmationMethod.ADJUDICATION,
        Image.ConfirmationMethod.IMPORT,
    ):
        return  # a reviewer's or an import's decision stands
    current = grades_current(image=image)
    if len(current) < grades_required:
        if image.grading_state != Image.GradingState.PENDING:
            _image_unconfirm(image=image, state=Image.GradingState.PENDING)
        return
    if not _grades_agree(current) or correction_requests_open(image=image).exists():
        # An open correction request is settled by an adjudicator, never by agreement.
        _image_unconfirm(image=image, state=Image.GradingState.ADJUDICATION)
        return
    # Any grader's macular oedema finding is kept: a missed oedema delays a referral, an extra
    # one costs a second look.
    _image_confirm(
        image=image,
        grade_id=current[0].grade_id,
        ungradable=current[0].ungradable,
        macular_oedema=any(grade.macular_oedema for grade in current),
        method=(
            Image.ConfirmationMethod.SINGLE
            if len(current) == 1
            else Image.ConfirmationMethod.AGREEMENT
        ),
        confirmed_by=last_grader or current[-1].grader,
    )


def certification_grade_submit(
    *, image: Image, grader: User, choice: GradeInput, rubric: RubricRecord
) -> Grade:
    """A clinician's grade of a certification image: scored against the reference, never part of
    the image's confirmation, and not correctable (the reference is shown once it is saved)."""
    with transaction.atomic():
        locked = Image.objects.select_for_update().get(pk=image.pk)
        previous = Grade.objects.filter(
            image=locked, grader=grader, kind=Grade.Kind.CERTIFICATION
        ).first()
        if previous is not None and _grade_repeats(
            previous, level=_grade_level_resolve(choice), choice=choice, rubric=rubric
        ):
            return previous  # a double submit: the first grade stands, no second row
        if previous is not None:
            raise GradeRejected(
                "You have already graded this certification image; certification grades are "
                "not corrected (the reference was shown after your grade)."
            )
        return _grade_append(
            image=locked,
            kind=Grade.Kind.CERTIFICATION,
            grader=grader,
            level=_grade_level_resolve(choice),
            choice=choice,
            supersedes=None,
            rubric=rubric,
        )


def grade_submit(*, image: Image, grader: User, choice: GradeInput) -> Grade:
    """``grade_save`` for callers that need only the reader's current grade."""
    return grade_save(image=image, grader=grader, choice=choice).grade


def _correction_request_make(
    *, image: Image, grader: User, previous: Grade, level: GradeLevel | None, choice: GradeInput
) -> GradeSaved:
    """A correction the reader may no longer make by themselves: kept as a request with its
    reason, and the image goes to the adjudicator (a confirmed image too: the reader has seen
    every grade of it already, so its leaving "confirmed" tells them nothing new)."""
    reason = choice.correction_reason.strip()
    if not reason:
        raise GradeRejected(
            "Your grade is saved and this image's model opinion or grading state is known, so a "
            "correction goes to an adjudicator, who decides: give the reason for it."
        )
    if len(reason) > MAX_NOTES_LENGTH:
        raise GradeRejected(f"The reason is limited to {MAX_NOTES_LENGTH} characters.")
    open_request = correction_request_open_for(image=image, grader=grader)
    if (
        open_request is not None
        and open_request.grade_id == (level.pk if level is not None else None)
        and open_request.ungradable == choice.ungradable
        and open_request.macular_oedema == choice.macular_oedema
    ):
        return GradeSaved(grade=previous, request=open_request, changed=False)
    request = CorrectionRequest(
        image=image,
        grader=grader,
        corrects=previous,
        grade=level,
        ungradable=choice.ungradable,
        macular_oedema=choice.macular_oedema,
        notes=choice.notes.strip(),
        reason=reason,
    )
    request.full_clean()
    request.save()
    if image.grading_state == Image.GradingState.CONFIRMED:
        # Whatever confirmed it (agreement, a single grade, an adjudication), a reviewer looks
        # again; a pending image goes to them once its grades are in (image_confirmation_refresh).
        _image_unconfirm(image=image, state=Image.GradingState.ADJUDICATION)
    return GradeSaved(grade=previous, request=request)


def _first_grade_check(*, image: Image, required: int) -> None:
    if image.grading_state != Image.GradingState.PENDING:
        raise GradeRejected(
            "This image already has the independent grades it needs; your grade was not recorded."
        )
    if len(grades_current(image=image)) >= required:
        raise GradeRejected(
            "Other clinicians have already graded this image; your grade was not recorded."
        )


def grade_save(*, image: Image, grader: User, choice: GradeInput) -> GradeSaved:
    """Record a clinician's independent grade (or their correction of it) and update the image.
    Idempotent: submitting what the grader's current grade already says writes nothing. A
    correction once the image needs adjudication or a model gave its opinion becomes a
    correction request (``_correction_request_make``). On a certification image, a clinician's
    grade is a certification grade instead."""
    level = _grade_level_resolve(choice)
    rubric = _rubric_resolve(choice, level)
    if certification_subject(user=grader) and image.pk in certification_image_ids():
        before = Grade.objects.filter(
            image_id=image.pk, grader=grader, kind=Grade.Kind.CERTIFICATION
        ).first()
        grade = certification_grade_submit(image=image, grader=grader, choice=choice, rubric=rubric)
        return GradeSaved(grade=grade, changed=before is None)
    counts = grade_counts_towards_confirmation(grader=grader)
    with transaction.atomic():
        # Lock the image so two grades arriving together are counted one after the other.
        # (with its patient: the audit log names the image by it)
        locked = (
            Image.objects.select_for_update(of=("self",)).select_related("patient").get(pk=image.pk)
        )
        previous = _grade_current(image=locked, kind=Grade.Kind.GRADER, grader=grader)
        required = workbench_settings_get().grades_required
        if previous is None:
            _first_grade_check(image=locked, required=required)
        elif _grade_repeats(previous, level=level, choice=choice, rubric=rubric):
            # A double submit (or "save" pressed again) changes nothing: no second row.
            return GradeSaved(grade=previous, changed=False)
        elif correction_goes_to_adjudicator(image=locked):
            saved = _correction_request_make(
                image=locked, grader=grader, previous=previous, level=level, choice=choice
            )
            image.refresh_from_db()
            return saved
        grade = _grade_append(
            image=locked,
            kind=Grade.Kind.GRADER,
            grader=grader,
            level=level,
            choice=choice,
            supersedes=previous,
            rubric=rubric,
            counts=counts,
        )
        claim_release(image=locked, grader=grader)
        image_confirmation_refresh(image=locked, grades_required=required, last_grader=grader)
    # The caller's instance takes the state the locked row was saved with (no second read).
    for attname in _CONFIRMATION_ATTNAMES:
        setattr(image, attname, getattr(locked, attname))
    return GradeSaved(grade=grade, corrected=previous is not None)


def grade_adjudicate(*, image: Image, reviewer: User, choice: GradeInput) -> Grade:
    """A reviewer's decision: recorded as an adjudication grade and made the confirmed grade.

    Allowed for images in the adjudication queue and for confirmed images a reviewer wants to
    correct (e.g. flagged because the model disagrees strongly); not for images still waiting for
    their independent grades.
    """
    level = _grade_level_resolve(choice)
    with transaction.atomic():
        locked = Image.objects.select_for_update().get(pk=image.pk)
        if locked.grading_state == Image.GradingState.PENDING:
            raise GradeRejected(
                "This image is still waiting for its independent grades; adjudicate it once "
                "the graders have finished."
            )
        # Nobody settles a disagreement they are part of, unless the clinic allows it (too few
        # reviewers); then the adjudication says so.
        was_grader = Grade.objects.filter(
            image=locked, kind=Grade.Kind.GRADER, grader=reviewer
        ).exists()
        if was_grader and not workbench_settings_get().allow_self_adjudication:
            raise GradeRejected(
                "You graded this image yourself, so another reviewer must adjudicate it "
                "(an admin can allow self-adjudication in the grading settings)."
            )
        # A later adjudication (by any reviewer) corrects the previous one.
        grade = _grade_append(
            image=locked,
            kind=Grade.Kind.ADJUDICATION,
            grader=reviewer,
            level=level,
            choice=choice,
            supersedes=_grade_current(image=locked, kind=Grade.Kind.ADJUDICATION),
            adjudicator_graded=was_grader,
        )
        for request in correction_requests_open(image=locked):  # saved one by one: audited
            request.resolved_by, request.resolved_at = reviewer, timezone.now()
            request.save(update_fields=["resolved_by", "resolved_at"])
        _image_confirm(
            image=locked,
            grade_id=level.pk if level is not None else None,
            ungradable=choice.ungradable,
            macular_oedema=choice.macular_oedema,
            method=Image.ConfirmationMethod.ADJUDICATION,
            confirmed_by=reviewer,
        )
    image.refresh_from_db()
    return grade


def images_confirmation_refresh_all() -> int:
    """After the number of required grades changed: settle pending images that now have enough
    grades. Confirmed images stay confirmed (no retroactive second opinions). Returns how many
    images changed state."""
    required = workbench_settings_get().grades_required
    changed = 0
    candidates = (
        Image.objects.filter(
            grading_state=Image.GradingState.PENDING,
            grades__kind=Grade.Kind.GRADER,
            grades__superseded_by__isnull=True,
        )
        .values_list("id", flat=True)
        .distinct()
    )
    for image_id in list(candidates):
        with transaction.atomic():
            locked = Image.objects.select_for_update().get(pk=image_id)
            image_confirmation_refresh(image=locked, grades_required=required)
            if locked.grading_state != Image.GradingState.PENDING:
                changed += 1
    return changed
