"""The backup drill: grade images, back up while a grader keeps saving, restore into a fresh
database and media root, and find every grade acknowledged before the backup started, every
photograph, and an active model that predicts the same. Runs on SQLite and on PostgreSQL (CI)."""

from __future__ import annotations

import io
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np
from django.core.management import CommandError, call_command
from django.db import connection, connections
from django.test import TransactionTestCase, override_settings
from django.utils import timezone

from grading.models import Grade, Image, ModelVersion
from mlcore.features.config import FeatureConfig
from mlcore.models.artifact import load_artifact, save_artifact
from mlcore.models.classifier import HeadClassifier
from tests.factories import image_make, user_make
from tests.factories_grading import MigrationDataKeptMixin, grade_give
from tests.factories_jobs import REPO_ROOT, tests_database_url, wait_until
from tests.mlcore.toy_backbones import TOY, TOY_DIM, ensure_toy_backbones

ensure_toy_backbones()


def _model_train(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 5, 120)
    X = (rng.normal(size=(120, TOY_DIM)) + y[:, None]).astype(np.float32)
    classifier = HeadClassifier(epochs=3, early_stopping=False, batch_size=32).fit(X, y)
    config = FeatureConfig(backbones=(TOY,), preprocessing="none")
    save_artifact(folder, classifier, feature_config=config, training_counts={0: 24})
    return X, classifier.predict_proba(X)


class RestoreTarget:
    """A fresh database of the tests' engine, named after the test database, and its rows."""

    def __init__(self, tmp: Path):
        db = connection.settings_dict
        self.sqlite = connection.vendor == "sqlite"
        if self.sqlite:
            self.path = tmp / "restored.sqlite3"
            self.url = f"sqlite:///{self.path}"
        else:
            self.name = f"{db['NAME']}_restore"
            self._admin(f'DROP DATABASE IF EXISTS "{self.name}"')
            self._admin(f'CREATE DATABASE "{self.name}"')
            self.url = tests_database_url().rsplit("/", 1)[0] + f"/{self.name}"

    def _admin(self, sql: str) -> None:
        with connection.cursor() as cursor:
            cursor.execute(sql)

    def rows(self, sql: str) -> list[tuple]:
        if self.sqlite:
            with sqlite3.connect(self.path) as db:
                return db.execute(sql).fetchall()
        import psycopg

        with psycopg.connect(self.url.replace("postgres://", "postgresql://", 1)) as db:
            return db.execute(sql).fetchall()

    def drop(self) -> None:
        if not self.sqlite:
            self._admin(f'DROP DATABASE IF EXISTS "{self.name}"')


class BackupRestoreDrillTests(MigrationDataKeptMixin, TransactionTestCase):
    def setUp(self):
        self.tmp = Path(tempfile.mkdtemp(prefix="funduscope-drill-"))
        self.addCleanup(shutil.rmtree, self.tmp, ignore_errors=True)
        self.enterContext(
            override_settings(
                MEDIA_ROOT=str(self.tmp / "media"), FUNDUS_MODEL_DIR=self.tmp / "models"
            )
        )

    def restore(self, target: RestoreTarget, src: Path) -> subprocess.CompletedProcess:
        env = {
            **os.environ,
            "DATABASE_URL": target.url,
            "MEDIA_ROOT": str(self.tmp / "restored-media"),
            "FUNDUS_MODEL_DIR": str(self.tmp / "restored-models"),
        }
        command = [sys.executable, "manage.py", "restore", str(src)]
        return subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True)

    def test_the_drill(self):
        alice, bob = user_make("alice", "clinician"), user_make("bob", "clinician")
        images = [image_make() for _ in range(24)]
        for index, image in enumerate(images[:10]):
            grade_give(image, alice, index % 5)
        X, expected = _model_train(self.tmp / "models" / "v-drill")
        ModelVersion.objects.create(
            name="v-drill",
            state=ModelVersion.State.ACTIVE,
            artifact_path=str(self.tmp / "models" / "v-drill"),
            backbones=[TOY],
            class_values=[0, 1, 2, 3, 4],
            activated_at=timezone.now(),
        )

        saved_during: list[int] = []
        stop = threading.Event()

        def keep_grading() -> None:
            try:
                for image in images[10:]:
                    if stop.is_set():
                        break
                    saved_during.append(grade_give(image, bob, 1).pk)
            finally:
                connections.close_all()

        grader = threading.Thread(target=keep_grading)
        grader.start()
        wait_until(lambda: saved_during, timeout=20, what="the grader's first save")
        acknowledged = dict(Grade.objects.values_list("pk", "grade_id"))  # committed, answered
        try:
            call_command("backup", str(self.tmp / "backup"), stdout=io.StringIO())
        finally:
            stop.set()
            grader.join()
        self.assertGreater(len(acknowledged), 10, "the grader saved before the backup began")

        target = RestoreTarget(self.tmp)
        self.addCleanup(target.drop)
        result = self.restore(target, self.tmp / "backup")
        self.assertEqual(result.returncode, 0, result.stderr)

        restored = dict(target.rows("SELECT id, grade_id FROM grading_grade"))
        missing = {pk: grade for pk, grade in acknowledged.items() if restored.get(pk) != grade}
        self.assertEqual(missing, {}, "grades acknowledged before the backup are all restored")
        files = [row[0] for row in target.rows("SELECT file FROM grading_image")]
        self.assertEqual(len(files), Image.objects.count())
        for name in files:
            self.assertTrue((self.tmp / "restored-media" / name).is_file(), name)
        [(name, path)] = target.rows(
            "SELECT name, artifact_path FROM grading_modelversion WHERE state = 'active'"
        )
        self.assertEqual(name, "v-drill")
        self.assertEqual(Path(path), self.tmp / "restored-models" / "v-drill")
        predicted = load_artifact(path).classifier.predict_proba(X)
        np.testing.assert_array_equal(predicted, expected)

    def test_a_damaged_backup_or_a_used_installation_is_refused_before_anything_is_written(self):
        image_make()
        dest = self.tmp / "backup"
        call_command("backup", str(dest), stdout=io.StringIO())
        with self.assertRaisesMessage(CommandError, "is not empty: back up into a new folder"):
            call_command("backup", str(dest))
        # This installation is in use: its database has tables.
        with self.assertRaisesMessage(CommandError, "The database is not empty"):
            call_command("restore", str(dest))
        manifest = json.loads((dest / "manifest.json").read_text())
        photo = next(name for name in manifest["files"] if name.startswith("media/"))
        (dest / photo).write_bytes(b"not the photograph")
        empty = self.tmp / "empty-media"
        with (
            override_settings(MEDIA_ROOT=str(empty)),
            self.assertRaisesMessage(CommandError, f"{photo} is missing or has the wrong size"),
        ):
            call_command("restore", str(dest))
        self.assertFalse(empty.exists())
        (dest / "manifest.json").unlink()
        with self.assertRaisesMessage(CommandError, "has no manifest.json"):
            call_command("restore", str(dest))
