"""FUNDUS_STORAGE=s3 on a real S3 server (SeaweedFS): photographs, renders, model folders and
feature shards live in the bucket; each machine's folders are only a cache, and photographs
reach the browser through the app with the same access control as local files."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from django.test import TestCase, override_settings

from grading import storage
from grading.models import FeatureShardRow
from grading.services import feature_shards
from grading.services.images import image_create, image_validate
from tests.base import BaseTestCase
from tests.factories import fundus_jpeg_bytes, patient_make
from tests.s3 import bucket_keys, s3_client

REPO_ROOT = Path(__file__).resolve().parent.parent


class _CacheFolders:
    """Empty MEDIA_ROOT, feature store and model folders of this "machine" (per test)."""

    def setUp(self):
        super().setUp()
        self.machine = Path(tempfile.mkdtemp(prefix="funduscope-s3-"))
        self._folders = override_settings(
            MEDIA_ROOT=str(self.machine / "media"),
            FUNDUS_FEATURE_STORE=self.machine / "features",
            FUNDUS_MODEL_DIR=self.machine / "models",
        )
        self._folders.enable()

    def tearDown(self):
        self._folders.disable()
        shutil.rmtree(self.machine, ignore_errors=True)
        super().tearDown()

    def another_machine(self):
        """The same settings with empty cache folders: another web server or worker."""
        other = self.machine / "other"
        return override_settings(
            MEDIA_ROOT=str(other / "media"),
            FUNDUS_FEATURE_STORE=other / "features",
            FUNDUS_MODEL_DIR=other / "models",
        )


def _photograph(seed: int = 7):
    return image_create(
        validated=image_validate(data=fundus_jpeg_bytes(seed=seed)), patient=patient_make()
    )


@pytest.mark.usefixtures("s3_bucket_class")
class PhotographsInTheBucketTests(_CacheFolders, BaseTestCase):
    def test_an_uploaded_photograph_is_stored_in_the_bucket_not_on_this_machine(self):
        image = _photograph()
        self.assertIn(image.file.name, bucket_keys(self.s3, self.bucket, "images/"))
        self.assertFalse((self.machine / "media" / image.file.name).exists())

    def test_it_is_streamed_through_the_app_with_the_same_access_control(self):
        image = _photograph(seed=8)
        data = s3_client(self.s3).get_object(Bucket=self.bucket, Key=image.file.name)["Body"]
        stored = data.read()
        url = f"/images/{image.pk}/file"
        self.assertEqual(self.client.get(url).status_code, 302)  # no login: to the login page
        self.assertTrue(self.client.get(url)["Location"].startswith("/accounts/login/"))
        self.login(self.nora)  # a signed-in account without a role
        self.assertEqual(self.client.get(url).status_code, 403)
        self.login(self.alice)
        response = self.client.get(url)
        self.assertEqual(response.status_code, 200)
        self.assertEqual(response["Content-Type"], "image/jpeg")
        self.assertEqual(b"".join(response.streaming_content), stored)
        self.assertIn("private", response["Cache-Control"])
        # The bucket itself refuses anyone without the key: the app is the only way in.
        with self.assertRaises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{self.s3.url}/{self.bucket}/{image.file.name}", timeout=10)
        self.assertEqual(refused.exception.code, 403)

    def test_a_render_made_by_one_web_server_is_reused_by_another(self):
        image = _photograph(seed=9)
        self.login(self.alice)
        first = self.client.get(f"/images/{image.pk}/view/cropped.png")
        self.assertEqual(first.status_code, 200)
        rendered = b"".join(first.streaming_content)
        self.assertIn(f"views/cropped/{image.sha256}.png", bucket_keys(self.s3, self.bucket))
        with self.another_machine():
            again = self.client.get(f"/images/{image.pk}/view/cropped.png")
            self.assertEqual(again.status_code, 200)
            self.assertEqual(b"".join(again.streaming_content), rendered)
            # Fetched from the bucket into this machine's cache, not rendered again.
            self.assertTrue(
                (self.machine / "other/media/views/cropped" / f"{image.sha256}.png").is_file()
            )

    def test_a_photograph_missing_from_the_bucket_is_a_404_not_a_500(self):
        image = _photograph(seed=10)
        s3_client(self.s3).delete_object(Bucket=self.bucket, Key=image.file.name)
        self.login(self.alice)
        self.assertEqual(self.client.get(f"/images/{image.pk}/file").status_code, 404)


@pytest.mark.usefixtures("s3_bucket_class")
class ModelsAndFeaturesInTheBucketTests(_CacheFolders, TestCase):
    def test_a_model_folder_published_on_one_worker_is_fetched_whole_by_another(self):
        folder = self.machine / "models" / "v7"
        (folder / "head").mkdir(parents=True)
        (folder / "head" / "weights.npz").write_bytes(b"\x00weights" * 100)
        (folder / "metadata.json").write_text('{"name": "v7"}')
        self.assertEqual(storage.model_folder_upload(folder=folder), 2)
        with self.another_machine():
            local = storage.model_folder_local(str(folder))
            self.assertEqual(local, self.machine / "other" / "models" / "v7")
            self.assertEqual((local / "head" / "weights.npz").read_bytes(), b"\x00weights" * 100)
            self.assertEqual(
                storage.model_file_local(str(folder), "metadata.json").read_text(),
                '{"name": "v7"}',
            )
            self.assertIsNone(storage.model_file_local(str(folder), "confusion.png"))
        with self.assertRaises(storage.StorageMissing):
            storage.model_folder_local(str(self.machine / "models" / "never-trained"))

    def test_published_features_reach_another_worker_once_each(self):
        from mlcore.features.config import FeatureConfig
        from mlcore.features.shards import write_shard
        from mlcore.features.store import FeatureStore, feature_key, store_path

        config = FeatureConfig(backbones=("mobilenet_v2",), preprocessing="none")
        (config_key,) = feature_shards.config_keys(config).values()
        keys = [feature_key(f"{n:064x}") for n in range(5)]
        features = np.random.default_rng(0).normal(size=(5, 1280)).astype(np.float32)
        rows = []
        for shard_number, part in enumerate((slice(0, 3), slice(2, 5))):  # key 2 in both
            shard = f"features/{config_key}/shard{shard_number}.h5"
            local = write_shard(
                self.machine / f"s{shard_number}.h5",
                keys[part],
                features[part],
                backbone="mobilenet_v2",
                preprocessing="none",
                dtype="float32",
            )
            storage.object_upload(path=local, name=shard)
            rows = [
                FeatureShardRow(config_key=config_key, key=key, shard=shard, row=row)
                for row, key in enumerate(keys[part])
            ]
            FeatureShardRow.objects.bulk_create(rows, ignore_conflicts=True)
        # The second writer's copy of key 2 was not added: one row per key.
        self.assertEqual(FeatureShardRow.objects.filter(config_key=config_key).count(), 5)
        with self.another_machine():
            self.assertEqual(feature_shards.features_gather(config=config, keys=keys), 5)
            self.assertEqual(feature_shards.features_gather(config=config, keys=keys), 0)
            path = store_path(self.machine / "other" / "features", "mobilenet_v2", "none")
            with FeatureStore(
                path, backbone="mobilenet_v2", preprocessing="none", feature_dim=1280, mode="r"
            ) as store:
                np.testing.assert_allclose(store.get(keys), features)


class StorageSettingsTests(TestCase):
    def _settings_error(self, **env: str) -> str:
        completed = subprocess.run(
            [sys.executable, "-c", "import grading.settings"],
            cwd=REPO_ROOT,
            env={"PATH": "/usr/bin:/bin", **env},
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.assertNotEqual(completed.returncode, 0, completed.stdout)
        return completed.stderr.strip().splitlines()[-1]

    def test_s3_storage_without_its_settings_fails_loudly(self):
        error = self._settings_error(FUNDUS_STORAGE="s3", FUNDUS_S3_ENDPOINT="http://s3:8333")
        self.assertIn(
            "FUNDUS_STORAGE=s3 requires FUNDUS_S3_ACCESS_KEY, FUNDUS_S3_SECRET_KEY", error
        )

    def test_an_unknown_storage_is_refused(self):
        error = self._settings_error(FUNDUS_STORAGE="nfs")
        self.assertIn("FUNDUS_STORAGE='nfs' must be one of local, s3", error)
