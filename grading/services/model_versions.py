"""Model versions: retrain requests, automatic retraining, activation and rollback.

Everything here is cheap and runs in the web process; training itself runs in the `ml` worker
(``grading.services.model_training``), and so does evaluation (``model_evaluation``). Exactly one version is active at a time: activation retires the current one and
activates the new one in a single transaction, and the database's partial unique constraint
refuses a second active version whatever the race. A new version is always a *candidate*: only an
admin activates it, with one exception — the very first version trained at setup (``bootstrap``)
when no version was ever active, so that a fresh installation grades with a model at once.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.utils import timezone

from grading import storage
from grading.models import Image, Job, ModelVersion, WorkbenchSettings
from grading.selectors.model_versions import model_version_rollback_target
from grading.services.audit import audit_actor
from grading.services.jobs import QueueUnavailable, job_enqueue
from grading.services.predictions import predictions_refresh_enqueue
from grading.services.training_set import TrainingDataError, training_data_check

logger = logging.getLogger(__name__)


class ModelVersionError(ValueError):
    """The requested change of model version is not possible; the message is for users."""


# ---------------------------------------------------------------------------------------------
# Requests from the web process


TRAINING_MODES = {
    "head": "Fast: head on cached features (seconds)",
    "finetune": "Fine-tune the whole network (about 35 min on 2 CPU cores, minutes on a GPU)",
}


def model_retrain_request(
    *,
    user: User | None,
    trigger: str = "manual",
    activate_if_first: bool = False,
    mode: str = "head",
) -> tuple[Job, bool]:
    """Queue a retrain (or return the one already open). ``mode``: ``"head"`` (a head on cached
    frozen features) or ``"finetune"`` (the backbone's top blocks too). Raises
    ``TrainingDataError`` when the confirmed grades cannot make a model, ``QueueUnavailable``
    when Redis is down."""
    if mode not in TRAINING_MODES:
        raise ValueError(f"unknown training mode {mode!r}; known: {', '.join(TRAINING_MODES)}")
    training_data_check()
    params: dict[str, Any] = {"trigger": trigger, "mode": mode}
    if activate_if_first:
        params["activate_if_first"] = True
    return job_enqueue(kind=Job.Kind.MODEL_TRAIN, params=params, created_by=user)


def model_auto_retrain_check() -> Job | None:
    """Queue a candidate retrain once ``auto_retrain_after`` images were confirmed since the last
    training was requested (0 turns this off). The result is never activated automatically."""
    workbench = WorkbenchSettings.objects.first()
    threshold = workbench.auto_retrain_after if workbench else 0
    if not threshold:
        return None
    last_training = Job.objects.filter(kind=Job.Kind.MODEL_TRAIN).order_by("-created_at").first()
    confirmed = Image.objects.filter(
        grading_state=Image.GradingState.CONFIRMED, confirmed_ungradable=False
    )
    if last_training is not None:
        confirmed = confirmed.filter(confirmed_at__gt=last_training.created_at)
    new_confirmed = confirmed.count()
    if new_confirmed < threshold:
        return None
    try:
        training_data_check()
    except TrainingDataError:
        return None
    job, created = job_enqueue(
        kind=Job.Kind.MODEL_TRAIN, params={"trigger": "automatic", "new_confirmed": new_confirmed}
    )
    return job if created else None


# ---------------------------------------------------------------------------------------------
# Activation and rollback


@dataclass
class Activation:
    version: ModelVersion
    previous: ModelVersion | None
    refresh_job: Job | None
    refresh_error: str = ""


def model_version_activate(
    *, version: ModelVersion, user: User | None = None, audit_note: str = "activation"
) -> Activation:
    """Make ``version`` the one that grades new images; the current active one is retired.

    One transaction: at no moment are there zero or two active versions. Then the predictions
    the version lacks (images uploaded since it was trained) are queued, best effort.
    """
    version.refresh_from_db()
    if version.state == ModelVersion.State.ACTIVE:
        raise ModelVersionError(f"{version.name} is already the active model.")
    if version.state not in (ModelVersion.State.CANDIDATE, ModelVersion.State.RETIRED):
        raise ModelVersionError(
            f"{version.name} is {version.get_state_display().lower()}; only a candidate or a "
            "retired version can be activated."
        )
    if not version.artifact_path or not storage.model_file_local(
        version.artifact_path, "metadata.json"
    ):
        raise ModelVersionError(
            f"The files of {version.name} are missing ({version.artifact_path or 'no folder'}); "
            "it cannot be activated."
        )
    try:
        with audit_actor(user), transaction.atomic():
            locked = (
                ModelVersion.objects.select_for_update()
                .filter(pk=version.pk, state=version.state)
                .first()
            )
            if locked is None:
                raise ModelVersionError(f"{version.name} changed meanwhile; reload the page.")
            previous = (
                ModelVersion.objects.select_for_update()
                .filter(state=ModelVersion.State.ACTIVE)
                .first()
            )
            # save() rather than update(): the audit trail records each state change, who made
            # it and whether it was a rollback.
            if previous is not None:
                previous.state = ModelVersion.State.RETIRED
                previous.audit_note = f"replaced by {version.name}"
                previous.save(update_fields=["state"])
            locked.state = ModelVersion.State.ACTIVE
            locked.activated_at = timezone.now()
            locked.activated_by = user
            locked.audit_note = audit_note
            locked.save(update_fields=["state", "activated_at", "activated_by"])
    except IntegrityError:
        raise ModelVersionError(
            "Another version was activated at the same moment; reload the page."
        ) from None
    version.refresh_from_db()
    if previous is not None:
        previous.refresh_from_db()
    logger.info(
        "Model %s activated by %s (was %s)", version.name, user or "setup", previous or "none"
    )
    activation = Activation(version=version, previous=previous, refresh_job=None)
    try:
        activation.refresh_job = predictions_refresh_enqueue(created_by=user)
    except QueueUnavailable as error:
        activation.refresh_error = str(error)
    return activation


def model_version_rollback(*, user: User | None = None) -> Activation:
    """Re-activate the version that was active before the current one."""
    target = model_version_rollback_target()
    if target is None:
        raise ModelVersionError("There is no previously active version to roll back to.")
    return model_version_activate(version=target, user=user, audit_note="rollback")


def model_version_next_name() -> str:
    numbers = [
        int(match.group(1))
        for name in ModelVersion.objects.values_list("name", flat=True)
        if (match := re.fullmatch(r"v(\d+)", name))
    ]
    return f"v{max(numbers, default=0) + 1}"
