"""Factories for test data: named users per role, patients, synthetic fundus photographs."""

from __future__ import annotations

import io
import itertools

import numpy as np
import PIL.Image
from django.contrib.auth.models import Group, User

from grading.models import GradeLevel, Image, Patient
from grading.services.images import image_create, image_validate

_counter = itertools.count(1_000_000)


def user_make(username: str, role: str | None, *, password: str = "secret-pass-123") -> User:
    user = User.objects.create_user(
        username=username, password=password, email=f"{username}@example.org"
    )
    if role is not None:
        user.groups.add(Group.objects.get(name=role))
    return user


def fundus_jpeg_bytes(
    *,
    size: int = 128,
    seed: int | None = None,
    lesion: tuple[int, int] | None = None,
    fmt: str = "JPEG",
    framed: bool = False,
) -> bytes:
    """A small synthetic fundus: an orange disc on black with noise, unique per seed.

    Only the noise differs between seeds, so two of them are near-duplicates to a perceptual
    hash; ``framed`` also moves and sizes the disc by seed (a differently framed photograph),
    for sets that must be distinct pictures (training splits group near-duplicates)."""
    seed = next(_counter) if seed is None else seed
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    centre_y, centre_x, radius = size / 2, size / 2, size * 0.45
    if framed:
        centre_y += rng.uniform(-0.12, 0.12) * size
        centre_x += rng.uniform(-0.12, 0.12) * size
        radius = size * rng.uniform(0.30, 0.42)
    inside = (yy - centre_y) ** 2 + (xx - centre_x) ** 2 < radius**2
    pixels = np.zeros((size, size, 3), dtype=np.float32)
    pixels[inside] = (180, 80, 40)
    pixels += rng.normal(0, 12, pixels.shape) * inside[..., None]
    if lesion is not None:
        y, x = lesion
        pixels[max(0, y - 3) : y + 3, max(0, x - 3) : x + 3] = (255, 255, 200)
    buffer = io.BytesIO()
    PIL.Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buffer, format=fmt)
    return buffer.getvalue()


def patient_make(pseudonym: str | None = None, **fields) -> Patient:
    return Patient.objects.create(pseudonym=pseudonym or f"P{next(_counter):05d}", **fields)


def image_make(
    *,
    patient: Patient | None = None,
    eye: str = Image.Eye.RIGHT,
    confirmed_grade: int | None = None,
    seed: int | None = None,
    **fields,
) -> Image:
    validated = image_validate(data=fundus_jpeg_bytes(seed=seed))
    level = GradeLevel.objects.get(value=confirmed_grade) if confirmed_grade is not None else None
    return image_create(
        validated=validated,
        patient=patient or patient_make(),
        eye=eye,
        confirmed_grade=level,
        import_source="import:test" if level is not None else "",
        **fields,
    )
