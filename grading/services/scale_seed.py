"""A synthetic installation at scale, for benchmarks and load tests (``manage.py seed_scale``).

N images of patients seen over several visits (both eyes each visit), graded by 50 clinicians, with
two model versions that predicted every image, adjudications and finished jobs. The images all point at
a few real photographs (copied once into MEDIA_ROOT) but each has its own synthetic sha256, and they
are marked with the source ``scale-test``. Every table is written with ``bulk_create`` in chunks, so
100,000 images take minutes on PostgreSQL and on SQLite and the command's memory does not grow with N.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import hashlib
import io
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import PIL.Image
from django.conf import settings
from django.contrib.auth.hashers import make_password
from django.contrib.auth.models import Group, User
from django.db import connection, models, transaction
from django.utils import timezone

from grading import storage
from grading.models import (
    Grade,
    GradeLevel,
    Image,
    Job,
    ModelVersion,
    Patient,
    Prediction,
    probabilities_entropy,
)

SOURCE = "scale-test"
IMAGES_PER_VISIT = 2  # both eyes
VISITS_PER_PATIENT = 4
DAYS_BETWEEN_VISITS = 180
CHUNK = 2000
# Share of images in each state, and how confirmed images were confirmed (realistic, not tuned).
STATE_SHARES = {"confirmed": 0.80, "adjudication": 0.04, "pending": 0.16}
METHOD_SHARES = {"import": 0.30, "single": 0.45, "agreement": 0.20, "adjudication": 0.05}
UNGRADABLE_SHARE = 0.02
# Grade prevalence like a screening population (APTOS-like: many 0s, referable minority).
GRADE_PREVALENCE = [0.50, 0.10, 0.27, 0.05, 0.08]


class SeedRefused(Exception):
    """The database already holds a scale-test installation (seed a fresh database)."""


@dataclass
class SeedReport:
    images: int = 0
    patients: int = 0
    graders: int = 0
    grades: int = 0
    predictions: int = 0
    jobs: int = 0
    seconds: float = 0.0
    counts_by_state: dict[str, int] = field(default_factory=dict)


@contextlib.contextmanager
def _auto_now_add_off(*fields: models.DateTimeField) -> Iterator[None]:
    """Let bulk_create keep the timestamps we give (a history spread over years), then restore."""
    saved = [(f, f.auto_now_add) for f in fields]
    try:
        for f, _ in saved:
            f.auto_now_add = False
        yield
    finally:
        for f, value in saved:
            f.auto_now_add = value


def _field(model: type[models.Model], name: str) -> models.DateTimeField:
    found = model._meta.get_field(name)
    assert isinstance(found, models.DateTimeField)
    return found


def _synthetic_photo_bytes(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    size = 256
    yy, xx = np.mgrid[:size, :size]
    inside = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size * 0.45) ** 2
    pixels = np.zeros((size, size, 3), dtype=np.float32)
    pixels[inside] = (180, 80, 40)
    pixels += rng.normal(0, 12, pixels.shape) * inside[..., None]
    buffer = io.BytesIO()
    PIL.Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buffer, format="JPEG")
    return buffer.getvalue()


def _photos_install(*, photos_dir: Path | None, count: int) -> list[tuple[str, int, int]]:
    """Copy a few real photographs (else synthetic ones) into MEDIA_ROOT; (name, width, height)."""
    target = Path(settings.MEDIA_ROOT) / "images" / SOURCE
    target.mkdir(parents=True, exist_ok=True)
    sources: list[Path] = []
    if photos_dir is not None and photos_dir.is_dir():
        sources = sorted(
            p for p in photos_dir.rglob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png"}
        )[:count]
    installed = []
    for index in range(count):
        if index < len(sources):
            data = sources[index].read_bytes()
            suffix = sources[index].suffix.lower()
        else:
            data = _synthetic_photo_bytes(index)
            suffix = ".jpg"
        name = f"images/{SOURCE}/photo-{index}{suffix}"
        local = Path(settings.MEDIA_ROOT) / name
        local.write_bytes(data)
        storage.object_upload(path=local, name=name)  # FUNDUS_STORAGE=s3: into the bucket
        with PIL.Image.open(io.BytesIO(data)) as photo:
            installed.append((name, photo.width, photo.height))
    return installed


@dataclass(frozen=True)
class _People:
    user_ids: np.ndarray  # the graders'
    reviewer_id: int
    admin: User


def _graders_create(*, graders: int, password: str) -> _People:
    # One hash for every account: hashing 50 passwords one by one takes seconds on a busy CPU.
    password_hash = make_password(password)
    clinician = Group.objects.get(name="clinician")
    users = User.objects.bulk_create(
        [
            User(username=f"scale-grader{i:02d}", password=password_hash, is_active=True)
            for i in range(1, graders + 1)
        ]
    )
    users = list(User.objects.filter(username__startswith="scale-grader").order_by("username"))
    clinician.user_set.add(*users)
    reviewer = User.objects.create(username="scale-reviewer", password=password_hash)
    reviewer.groups.add(Group.objects.get(name="reviewer"))
    admin = User.objects.create(username="scale-admin", password=password_hash)
    admin.groups.add(Group.objects.get(name="admin"))
    return _People(
        user_ids=np.asarray([user.pk for user in users]), reviewer_id=int(reviewer.pk), admin=admin
    )


def _chunks(total: int) -> Iterator[range]:
    for start in range(0, total, CHUNK):
        yield range(start, min(total, start + CHUNK))


def _probabilities(rng: np.random.Generator, predicted: np.ndarray, k: int) -> np.ndarray:
    """A believable softmax per image: most mass on the predicted grade, some on its neighbours."""
    logits = rng.normal(0.0, 1.0, (predicted.size, k))
    peak = rng.uniform(1.0, 4.0, predicted.size)
    logits[np.arange(predicted.size), predicted] += peak
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


def _grade_row(
    grader_id: int | None,
    value: int,
    kind: str = Grade.Kind.GRADER,
    source: str = "",
    offset: int = 0,
    *,
    image_id: int,
    when: dt.datetime,
    ungradable: bool,
) -> Grade:
    # An adjudication of an ungradable image is never drawn; graders' grades follow the image.
    marks_ungradable = ungradable and kind != Grade.Kind.ADJUDICATION
    return Grade(
        image_id=image_id,
        kind=kind,
        grader_id=grader_id,
        source=source,
        grade_id=None if marks_ungradable else value,
        ungradable=marks_ungradable,
        created_at=when + dt.timedelta(minutes=offset),
    )


@dataclass(frozen=True)
class _Draws:
    """Everything about image i, drawn up front as small numpy arrays (not Python objects)."""

    state: np.ndarray  # "confirmed", "adjudication" or "pending"
    method: np.ndarray  # how a confirmed image was confirmed
    ungradable: np.ndarray
    true_position: np.ndarray  # index into the scale's classes
    other_position: np.ndarray  # the grade a disagreeing grader gave
    grader_a: np.ndarray  # indexes into the graders
    grader_b: np.ndarray
    rank: np.ndarray  # upload order
    first_visit: dt.datetime
    span_days: int
    patient_count: int
    images: int

    def image_time(self, i: int) -> dt.datetime:
        # Uploads spread over the whole span in rank order, so the pending images are the newest.
        return self.first_visit + dt.timedelta(
            days=int(self.rank[i]) * self.span_days / self.images, seconds=i % 997
        )

    def visit_date(self, i: int) -> dt.date:
        # Each patient's visits are half a year apart, whatever order they were uploaded in.
        per_patient = IMAGES_PER_VISIT * VISITS_PER_PATIENT
        patient_offset = (i // per_patient) * self.span_days / self.patient_count
        visit = (i % per_patient) // IMAGES_PER_VISIT
        return (
            self.first_visit + dt.timedelta(days=patient_offset + visit * DAYS_BETWEEN_VISITS)
        ).date()


def _draws_make(
    rng: np.random.Generator,
    *,
    images: int,
    k: int,
    prevalence: np.ndarray,
    graders: int,
    started: dt.datetime,
    patient_count: int,
) -> _Draws:
    span_days = 3 * 365
    state = rng.choice(list(STATE_SHARES), size=images, p=list(STATE_SHARES.values())).astype("U16")
    method = rng.choice(list(METHOD_SHARES), size=images, p=list(METHOD_SHARES.values())).astype(
        "U16"
    )
    ungradable = rng.random(images) < UNGRADABLE_SHARE
    true_position = rng.choice(k, size=images, p=prevalence)
    grader_a = rng.integers(0, graders, images)
    grader_b = (grader_a + rng.integers(1, graders, images)) % graders
    other_position = np.clip(true_position + rng.choice([-1, 1], size=images), 0, k - 1)
    other_position = np.where(
        other_position == true_position, (true_position + 1) % k, other_position
    )
    # Pending images are the newest: the queue is what arrived last.
    order = np.argsort(np.where(state == "pending", 1, 0), kind="stable")
    rank = np.empty(images, dtype=np.int64)
    rank[order] = np.arange(images)
    return _Draws(
        images=images,
        state=state,
        method=method,
        ungradable=ungradable,
        true_position=true_position,
        other_position=other_position,
        grader_a=grader_a,
        grader_b=grader_b,
        rank=rank,
        first_visit=started
        - dt.timedelta(days=span_days + VISITS_PER_PATIENT * DAYS_BETWEEN_VISITS),
        span_days=span_days,
        patient_count=patient_count,
    )


def scale_seed(
    *,
    images: int,
    graders: int = 50,
    password: str,
    photos_dir: Path | None = None,
    photos: int = 4,
    seed: int = 2026,
    progress: Callable[[str], None] = lambda message: None,
) -> SeedReport:
    """Fill the database with ``images`` synthetic images and everything around them."""
    if images < 1:
        raise ValueError("images must be at least 1")
    if Image.objects.filter(source=SOURCE).exists():
        raise SeedRefused(
            "This database already holds a scale-test installation; seed a fresh database."
        )
    started = timezone.now()
    rng = np.random.default_rng(seed)
    report = SeedReport()
    classes = list(GradeLevel.objects.order_by("value").values_list("value", flat=True))
    k = len(classes)
    prevalence = np.asarray(GRADE_PREVALENCE[:k] + [0.05] * max(0, k - len(GRADE_PREVALENCE)))
    prevalence = prevalence / prevalence.sum()

    photo_files = _photos_install(photos_dir=photos_dir, count=photos)
    people = _graders_create(graders=graders, password=password)
    report.graders = int(people.user_ids.size)
    progress(f"{report.graders} graders, a reviewer and an admin (scale-reviewer, scale-admin)")

    patient_count = math.ceil(images / (IMAGES_PER_VISIT * VISITS_PER_PATIENT))
    patient_ids = _patients_create(count=patient_count, prefix=f"SCALE-{seed}-")
    report.patients = len(patient_ids)
    progress(f"{report.patients} patients")

    draws = _draws_make(
        rng,
        images=images,
        k=k,
        prevalence=prevalence,
        graders=report.graders,
        started=started,
        patient_count=patient_count,
    )
    with (
        _auto_now_add_off(
            _field(Image, "uploaded_at"),
            _field(Grade, "created_at"),
            _field(Prediction, "created_at"),
            _field(Job, "created_at"),
        ),
        transaction.atomic(),
    ):
        id_of = _images_create(
            draws, photo_files=photo_files, patient_ids=patient_ids, classes=classes,
            people=people, seed=seed,
        )  # fmt: skip
        report.images = images
        progress(f"{images} images")
        report.grades = _grades_create(draws, id_of=id_of, classes=classes, people=people)
        progress(f"{report.grades} grades")
        versions = _versions_create(
            rng, draws, id_of=id_of, classes=classes, prevalence=prevalence, people=people,
            started=started, report=report, progress=progress,
        )  # fmt: skip
        report.jobs = _jobs_create(versions, id_of=id_of, admin=people.admin, started=started)

    # Fresh statistics: without them the planner takes the new tables for empty and picks plans
    # (nested loops over 100,000 rows) that take seconds.
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    report.counts_by_state = {state: int((draws.state == state).sum()) for state in STATE_SHARES}
    report.seconds = (timezone.now() - started).total_seconds()
    return report


def _patients_create(*, count: int, prefix: str) -> list[int]:
    for chunk in _chunks(count):
        Patient.objects.bulk_create(
            [
                Patient(
                    pseudonym=f"{prefix}{p:06d}",
                    birth_year=int(1940 + (p * 37) % 60),
                    diabetes_type="T2" if p % 5 else "T1",
                )
                for p in chunk
            ]
        )
    return list(
        Patient.objects.filter(pseudonym__startswith=prefix)
        .order_by("pseudonym")
        .values_list("pk", flat=True)
    )


def _image_sha256(seed: int, i: int) -> str:
    return hashlib.sha256(f"{SOURCE}:{seed}:{i}".encode()).hexdigest()


def _images_create(
    draws: _Draws,
    *,
    photo_files: list[tuple[str, int, int]],
    patient_ids: list[int],
    classes: list[int],
    people: _People,
    seed: int,
) -> np.ndarray:
    """The images; returns the id of image i."""
    per_patient = IMAGES_PER_VISIT * VISITS_PER_PATIENT
    method_names = Image.ConfirmationMethod
    for chunk in _chunks(draws.images):
        rows = []
        for i in chunk:
            name, width, height = photo_files[i % len(photo_files)]
            uploaded = draws.image_time(i)
            state = str(draws.state[i])
            confirmed = state == "confirmed"
            method = str(draws.method[i]) if confirmed else ""
            is_ungradable = confirmed and bool(draws.ungradable[i])
            rows.append(
                Image(
                    patient_id=patient_ids[i // per_patient],
                    eye=Image.Eye.RIGHT if i % 2 == 0 else Image.Eye.LEFT,
                    acquired_on=draws.visit_date(i),
                    file=name,
                    sha256=_image_sha256(seed, i),
                    width=width,
                    height=height,
                    original_filename=f"scale-{i:07d}.jpg",
                    source=SOURCE,
                    uploaded_at=uploaded,
                    grading_state=state,
                    confirmed_grade_id=(
                        classes[draws.true_position[i]] if confirmed and not is_ungradable else None
                    ),
                    confirmed_ungradable=is_ungradable,
                    confirmation_method=method,
                    confirmed_by_id=people.reviewer_id
                    if method == method_names.ADJUDICATION
                    else (
                        int(people.user_ids[draws.grader_a[i]])
                        if method == method_names.SINGLE
                        else None
                    ),
                    confirmed_at=uploaded + dt.timedelta(days=2) if confirmed else None,
                )
            )
        Image.objects.bulk_create(rows)
    image_ids = np.asarray(
        Image.objects.filter(source=SOURCE).order_by("sha256").values_list("pk", flat=True)
    )
    # bulk_create does not return ids on every backend: map index -> id through the sha256.
    sha_order = np.argsort([_image_sha256(seed, i) for i in range(draws.images)])
    id_of = np.empty(draws.images, dtype=np.int64)
    id_of[sha_order] = image_ids
    return id_of


def _grades_create(draws: _Draws, *, id_of: np.ndarray, classes: list[int], people: _People) -> int:
    """The grades behind each image's state; returns how many."""
    count = 0
    for chunk in _chunks(draws.images):
        grades: list[Grade] = []
        for i in chunk:
            state = str(draws.state[i])
            if state == "pending":
                continue
            is_ungradable = state == "confirmed" and bool(draws.ungradable[i])
            grade = functools.partial(
                _grade_row,
                image_id=int(id_of[i]),
                when=draws.image_time(i) + dt.timedelta(hours=6),
                ungradable=is_ungradable,
            )
            grades += _image_grades(
                grade,
                state=state,
                method=str(draws.method[i]),
                first=int(people.user_ids[draws.grader_a[i]]),
                second=int(people.user_ids[draws.grader_b[i]]),
                true_value=classes[draws.true_position[i]],
                other_value=classes[draws.other_position[i]],
                reviewer_id=people.reviewer_id,
                ungradable=is_ungradable,
            )
        Grade.objects.bulk_create(grades)
        count += len(grades)
    return count


def _image_grades(
    grade: Callable[..., Grade],
    *,
    state: str,
    method: str,
    first: int,
    second: int,
    true_value: int,
    other_value: int,
    reviewer_id: int,
    ungradable: bool,
) -> list[Grade]:
    """The grades of one image in ``state`` (not pending), confirmed by ``method``."""
    if state == "adjudication":
        return [grade(first, true_value), grade(second, other_value, offset=5)]
    if method == "import":
        return [grade(None, true_value, Grade.Kind.IMPORT, f"{SOURCE} import")]
    if method == "single":
        return [grade(first, true_value)]
    if method == "agreement":
        return [grade(first, true_value), grade(second, true_value, offset=5)]
    # Adjudicated: the graders disagreed, a reviewer decided (unless the image is ungradable).
    grades = [grade(first, true_value), grade(second, other_value, offset=5)]
    if not ungradable:
        grades.append(grade(reviewer_id, true_value, Grade.Kind.ADJUDICATION, offset=60))
    return grades


def _versions_create(
    rng: np.random.Generator,
    draws: _Draws,
    *,
    id_of: np.ndarray,
    classes: list[int],
    prevalence: np.ndarray,
    people: _People,
    started: dt.datetime,
    report: SeedReport,
    progress: Callable[[str], None],
) -> list[tuple[ModelVersion, dt.datetime]]:
    """Two model versions (retired, active), each of which predicted every image."""
    images, k = draws.images, len(classes)
    versions = []
    for index, (name, state, accuracy) in enumerate(
        [
            ("scale-v1", ModelVersion.State.RETIRED, 0.6),
            ("scale-v2", ModelVersion.State.ACTIVE, 0.7),
        ]
    ):
        created = started - dt.timedelta(days=draws.span_days * (0.6 - 0.4 * index))
        version = ModelVersion.objects.create(
            name=name,
            state=state,
            backbones=["efficientnet_lite0", "mobilenet_v2"],
            class_values=classes,
            train_counts={
                str(c): int(images * 0.8 * p) for c, p in zip(classes, prevalence, strict=True)
            },
            metrics={},
            created_by=people.admin,
            activated_at=created if state == ModelVersion.State.ACTIVE else None,
        )
        versions.append((version, created))
        drift = rng.random(images) >= accuracy
        shift = rng.choice([-1, 1], size=images)
        predicted = np.where(
            drift, np.clip(draws.true_position + shift, 0, k - 1), draws.true_position
        )
        probabilities = _probabilities(rng, predicted, k)
        for chunk in _chunks(images):
            Prediction.objects.bulk_create(
                [
                    Prediction(
                        image_id=int(id_of[i]),
                        model_version=version,
                        probabilities=[round(float(p), 5) for p in probabilities[i]],
                        entropy=probabilities_entropy(probabilities[i]),
                        predicted_grade_id=classes[predicted[i]],
                        created_at=created,
                    )
                    for i in chunk
                ]
            )
        report.predictions += images
        progress(f"{report.predictions} predictions ({name})")
    return versions


def _jobs_create(
    versions: list[tuple[ModelVersion, dt.datetime]],
    *,
    id_of: np.ndarray,
    admin: User,
    started: dt.datetime,
) -> int:
    """Finished jobs: each version's training and refresh, and 40 predictions (a tenth failed)."""
    jobs = []
    for version, created in versions:
        for kind in (Job.Kind.MODEL_TRAIN, Job.Kind.PREDICTIONS_REFRESH):
            jobs.append(
                Job(
                    kind=kind,
                    state=Job.State.SUCCEEDED,
                    progress=100,
                    message="Done.",
                    created_by=admin,
                    model_version=version,
                    created_at=created,
                    started_at=created,
                    finished_at=created + dt.timedelta(minutes=3),
                )
            )
    for n in range(40):
        when = started - dt.timedelta(hours=6 * n)
        jobs.append(
            Job(
                kind=Job.Kind.IMAGES_PREDICT,
                state=Job.State.SUCCEEDED if n % 10 else Job.State.FAILED,
                progress=100,
                message="Predicted 8 images." if n % 10 else "",
                error="" if n % 10 else "Synthetic failure (scale test).",
                params={"image_ids": [int(x) for x in id_of[n * 8 : n * 8 + 8]]},
                created_at=when,
                started_at=when,
                finished_at=when + dt.timedelta(seconds=4),
            )
        )
    Job.objects.bulk_create(jobs)
    return len(jobs)


def photos_dir_default() -> Path | None:
    demo = getattr(settings, "FUNDUS_DEMO_DIR", None)
    return Path(demo) if demo else None
