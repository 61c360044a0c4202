"""Near-duplicates are one patient for the app's splits (issue 19, item 4): a perceptual hash is
stored at import, and copies of one photograph filed under different patients share a group in
the retrain's hold-out, its inner split and the registry's cross-validation."""

from __future__ import annotations

import io

import numpy as np
import PIL.Image

from grading.models import GradeLevel
from grading.services.images import image_create, image_validate
from grading.services.training_set import training_groups, training_images
from mlcore.data.near_duplicates import HASH_HEX_DIGITS
from mlcore.data.splits import grouped_holdout, grouped_kfold
from tests.base import BaseTestCase
from tests.factories import fundus_jpeg_bytes, patient_make


def reencoded(data: bytes, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    with PIL.Image.open(io.BytesIO(data)) as image:
        image.convert("RGB").save(buffer, format=fmt, **options)
    return buffer.getvalue()


class NearDuplicateGroupTests(BaseTestCase):
    def _import(self, data: bytes, grade: int):
        return image_create(
            validated=image_validate(data=data),
            patient=patient_make(),
            confirmed_grade=GradeLevel.objects.get(value=grade),
            import_source="import:test",
        )

    def test_it_keeps_copies_filed_under_other_patients_on_one_side_of_every_split(self):
        original = fundus_jpeg_bytes(seed=1, lesion=(40, 60))
        copies = [
            original,
            reencoded(original, "JPEG", quality=90),
            reencoded(original, "PNG"),
            reencoded(original, "JPEG", quality=97, subsampling=0),
        ]
        stored = [self._import(data, grade=2) for data in copies]
        for seed in range(2, 26):
            self._import(fundus_jpeg_bytes(seed=seed), grade=seed % 3)
        self.assertTrue(all(len(i.perceptual_hash) == HASH_HEX_DIGITS for i in stored))
        self.assertEqual(len({i.patient_id for i in stored}), 4)  # four "patients"

        images = training_images()
        groups = np.asarray(training_groups(images=images))
        copy_rows = {
            k for k, image in enumerate(images) if image.image_id in {i.pk for i in stored}
        }
        self.assertEqual(len(set(groups[list(copy_rows)])), 1)
        self.assertEqual(len(set(groups)), len(images) - 3)  # the others are their own group
        grades = np.asarray([image.grade for image in images])
        splits = grouped_kfold(grades, groups, n_splits=4, seed=3) + [
            grouped_holdout(grades, groups, test_fraction=0.25, seed=seed) for seed in range(4)
        ]
        for train, test in splits:
            self.assertTrue(copy_rows <= set(train.tolist()) or copy_rows <= set(test.tolist()))


class GroupsFileImportTests(BaseTestCase):
    def test_photographs_of_one_listed_group_are_imported_as_one_patient(self):
        import tempfile
        from io import StringIO
        from pathlib import Path

        from django.core.management import call_command

        from grading.models import Image

        root = Path(tempfile.mkdtemp(prefix="import-groups-"))
        names = ["aptos2019_aa11", "aptos2019_bb22", "aptos2019_cc33", "dd44"]
        for seed, name in enumerate(names):
            (root / f"{name}.jpg").write_bytes(fundus_jpeg_bytes(seed=300 + seed))
        (root / "labels.csv").write_text(
            "filename,grade\n" + "".join(f"{name}.jpg,{i % 2}\n" for i, name in enumerate(names))
        )
        (root / "groups.txt").write_text("# same eye\naa11 cc33 dd44\n")
        call_command(
            "import_images", "--labels", str(root / "labels.csv"), "--groups",
            str(root / "groups.txt"), str(root), "--no-progress", stdout=StringIO(),
        )  # fmt: skip
        patient = dict(Image.objects.values_list("original_filename", "patient__pseudonym"))
        self.assertEqual(
            {patient[f"{n}.jpg"] for n in ("aptos2019_aa11", "aptos2019_cc33", "dd44")},
            {"group-aa11"},
        )
        self.assertNotEqual(patient["aptos2019_bb22.jpg"], "group-aa11")
