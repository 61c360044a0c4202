"""The one visibility rule: may this user see others' grades, or the model's opinion, of this
image? Every surface that shows grades or predictions asks here (the grading page and history,
the adjudication page, the API and exports, the audit page, the Django admin, the quality queue),
so none of them reveals what another hides.

Others' grades are hidden from a user:
- on a pending image they may grade and have not graded yet (an independent reader, whoever they
  are: a clinician, a reviewer or an admin who grades);
- on a certification image whose reference they have not earned yet (a clinician who has not
  saved their certification grade of it);
- before confirmation, from a user who neither adjudicates nor reviews.

The model's opinion is hidden on the same certification images, and from independent readers
while blind reading is on (the admin's setting ``blind_first_grader``).
"""

from __future__ import annotations

from typing import Any

from django.db.models import Q, QuerySet

from grading.models import CertificationItem, Grade, Image
from grading.selectors.certification import reference_hidden, reference_hidden_ids
from grading.selectors.worklist import workbench_settings_get

GRADE_PERMISSION = "grading.grade_image"
SEES_ALL_GRADES_PERMISSIONS = ("grading.adjudicate_image", "grading.review_agreement")


def reader_is_independent(*, image: Image, user: Any) -> bool:
    """Whether this user is (still) an independent reader of the image: the image waits for
    independent grades, the user may grade it, and has not saved a grade of it yet."""
    if image.grading_state != Image.GradingState.PENDING:
        return False
    if not user.has_perm(GRADE_PERMISSION):
        return False  # reviewers and viewers without the grading role never grade the image
    return not Grade.objects.filter(image=image, kind=Grade.Kind.GRADER, grader=user).exists()


def _sees_all_grades(user: Any) -> bool:
    return any(user.has_perm(permission) for permission in SEES_ALL_GRADES_PERMISSIONS)


def image_others_hidden(*, image: Image, user: Any, model: bool = False) -> bool:
    """Whether others' grades (``model=False``) or the model's opinion (``model=True``) of this
    image are withheld from this user; see the module's rule."""
    if reference_hidden(image=image, user=user):
        return True
    if model:
        if not workbench_settings_get().blind_first_grader:
            return False
        return reader_is_independent(image=image, user=user)
    if reader_is_independent(image=image, user=user):
        return True
    if image.grading_state == Image.GradingState.CONFIRMED:
        return False
    return not _sees_all_grades(user)


def images_read_independently(*, user: Any) -> QuerySet[Image]:
    """The pending images this user may grade and has not graded (for lists)."""
    if not user.has_perm(GRADE_PERMISSION):
        return Image.objects.none()
    graded = Grade.objects.filter(kind=Grade.Kind.GRADER, grader=user).values("image_id")
    return Image.objects.filter(grading_state=Image.GradingState.PENDING).exclude(pk__in=graded)


def images_others_hidden(*, user: Any, model: bool = False) -> QuerySet[Image]:
    """The images whose others' grades (or model opinion) are withheld from this user: the
    queryset form of ``image_others_hidden``, for lists, counts and admin querysets."""
    hidden = Q()
    any_part = False
    reference_ids = reference_hidden_ids(user=user)
    if reference_ids:
        hidden |= Q(pk__in=reference_ids)
        any_part = True
    # The permission first: it is cached on the user, the settings row is a query.
    if user.has_perm(GRADE_PERMISSION) and (
        not model or workbench_settings_get().blind_first_grader
    ):
        hidden |= Q(pk__in=images_read_independently(user=user).values("pk"))
        any_part = True
    if not model and not _sees_all_grades(user):
        hidden |= ~Q(grading_state=Image.GradingState.CONFIRMED)
        any_part = True
    return Image.objects.filter(hidden) if any_part else Image.objects.none()


def grades_visible_q(*, user: Any) -> Q:
    """A filter for rows with an ``image`` and a ``grader`` (grades, correction requests) that
    this user may see: their own, and others' on images whose grades are not withheld."""
    hidden = images_others_hidden(user=user).values("pk")
    return ~Q(image__in=hidden) | Q(grader=user.pk)


def predictions_visible_q(*, user: Any) -> Q:
    """A filter for Prediction rows this user may see."""
    return ~Q(image__in=images_others_hidden(user=user, model=True).values("pk"))


def certification_items_visible_q(*, user: Any) -> Q:
    """Certification items whose reference this user may see."""
    return ~Q(image_id__in=reference_hidden_ids(user=user))


def certification_items_hidden(*, user: Any) -> QuerySet[CertificationItem]:
    return CertificationItem.objects.exclude(certification_items_visible_q(user=user))
