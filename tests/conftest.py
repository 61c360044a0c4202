"""Shared test configuration.

Tests that need the datasets or weights in ``../shared`` skip with a clear reason only when the
folder is absent (CI always has it).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DIR = Path(os.environ.get("FUNDUS_SHARED_DIR", REPO_ROOT.parent / "shared"))
FUNDUS_DATASET_DIR = SHARED_DIR / "datasets" / "fundus"
RAW_FUNDUS_DIR = SHARED_DIR / "datasets" / "raw-fundus"
WEIGHTS_DIR = SHARED_DIR / "weights"


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        pytest.skip(f"{what} not found at {path} (set FUNDUS_SHARED_DIR to the shared folder)")
    return path


@pytest.fixture(scope="session")
def fundus_dataset_dir() -> Path:
    return _require(FUNDUS_DATASET_DIR, "graded fundus dataset")


@pytest.fixture(scope="session")
def raw_fundus_dir() -> Path:
    return _require(RAW_FUNDUS_DIR, "raw fundus photographs")


@pytest.fixture(scope="session")
def weights_dir() -> Path:
    return _require(WEIGHTS_DIR, "offline ImageNet weights")


@pytest.fixture(autouse=True, scope="session")
def _fast_password_hashing():
    """The default hasher costs ~0.5 s per user on this CPU; tests create many users."""
    from django.conf import settings

    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True, scope="session")
def _quality_gate_off():
    """Synthetic test photographs are 64 px: the quality gate would hold every one of them for a
    check. Its own tests turn it on (override_settings(FUNDUS_QUALITY_GATE=True))."""
    from django.conf import settings

    settings.FUNDUS_QUALITY_GATE = False


# Names of the helpers in tests/factories_jobs.py that start a real Celery worker.
_REAL_WORKER_HELPERS = ("thread_worker(", "subprocess_worker(")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the tests that start a real Celery worker (``worker``), so ``make test-fast`` can leave
    them and the browser tests to CI while running everything else."""
    import inspect

    for item in items:
        # TrainingMixin classes run an embedded worker for the whole class unless they opt out.
        if getattr(getattr(item, "cls", None), "embedded_worker", False):
            item.add_marker(pytest.mark.worker)
            continue
        function = getattr(item, "function", None)
        try:
            source = inspect.getsource(function) if function is not None else ""
        except (OSError, TypeError):
            continue
        if any(helper in source for helper in _REAL_WORKER_HELPERS):
            item.add_marker(pytest.mark.worker)
