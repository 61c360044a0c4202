"""Model version services: the training set, activation and rollback, automatic retraining."""

from __future__ import annotations

import tempfile
from pathlib import Path

from django.db import IntegrityError, transaction

from grading.models import Grade, Image, Job, ModelVersion, WorkbenchSettings
from grading.services import model_versions as services
from grading.services.ml_config import training_config_from_settings
from grading.services.model_evaluation import model_evaluation_catch_up
from grading.services.training_set import TrainingDataError, training_data_check, training_images
from tests.base import BaseTestCase
from tests.factories import image_make, patient_make
from tests.factories_jobs import BrokerMixin, model_version_make, redis_flush


class TrainingSetTests(BaseTestCase):
    def test_it_uses_confirmed_gradable_images_only(self):
        patient = patient_make()
        confirmed = image_make(patient=patient, confirmed_grade=2)
        image_make(patient=patient)  # pending: not confirmed yet
        ungradable = image_make(patient=patient)
        Grade.objects.create(image=ungradable, grader=self.alice, ungradable=True)
        Image.objects.filter(pk=ungradable.pk).update(
            grading_state=Image.GradingState.CONFIRMED, confirmed_ungradable=True
        )
        adjudicating = image_make(patient=patient)
        Image.objects.filter(pk=adjudicating.pk).update(
            grading_state=Image.GradingState.ADJUDICATION
        )
        ids = [item.image_id for item in training_images()]
        self.assertEqual(ids, [confirmed.pk])
        item = training_images()[0]
        self.assertEqual((item.grade, item.patient_id), (2, patient.pk))
        self.assertTrue(item.path.is_file())

    def test_it_refuses_to_train_on_too_few_confirmed_grades_with_a_clear_message(self):
        for grade in (0, 0, 2):
            image_make(confirmed_grade=grade)
        with self.assertRaisesMessage(TrainingDataError, "Not enough confirmed grades"):
            training_data_check()

    def test_it_accepts_enough_images_of_two_grades(self):
        for index in range(12):
            image_make(confirmed_grade=0 if index % 2 else 3)
        self.assertEqual(training_data_check(), {0: 6, 3: 6})

    def test_version_names_count_up(self):
        self.assertEqual(services.model_version_next_name(), "v1")
        model_version_make("v1")
        model_version_make("v7", state=ModelVersion.State.FAILED)
        self.assertEqual(services.model_version_next_name(), "v8")


class ActivationTests(BrokerMixin, BaseTestCase):
    def setUp(self):
        redis_flush()
        self.folder = Path(tempfile.mkdtemp(prefix="funduscope-models-"))

    def _version(self, name: str, state: str = ModelVersion.State.CANDIDATE) -> ModelVersion:
        return model_version_make(name, state=state, artifact_dir=self.folder / name)

    def test_activating_a_candidate_retires_the_active_one_leaving_exactly_one(self):
        v1 = self._version("v1", ModelVersion.State.ACTIVE)
        v2 = self._version("v2")
        activation = services.model_version_activate(version=v2, user=self.adam)
        v1.refresh_from_db()
        self.assertEqual(activation.version.state, ModelVersion.State.ACTIVE)
        self.assertEqual(activation.previous, v1)
        self.assertEqual(v1.state, ModelVersion.State.RETIRED)
        self.assertIsNotNone(activation.version.activated_at)
        self.assertEqual(ModelVersion.objects.filter(state=ModelVersion.State.ACTIVE).count(), 1)

    def test_activation_queues_the_missing_predictions_of_the_new_version(self):
        v1 = self._version("v1")
        with self.captureOnCommitCallbacks(execute=True):
            activation = services.model_version_activate(version=v1, user=self.adam)
        self.assertEqual(activation.refresh_job.kind, Job.Kind.PREDICTIONS_REFRESH)

    def test_rollback_reactivates_the_previously_active_version(self):
        v1 = self._version("v1")
        v2 = self._version("v2")
        services.model_version_activate(version=v1)
        services.model_version_activate(version=v2)
        activation = services.model_version_rollback(user=self.adam)
        self.assertEqual(activation.version, v1)
        v2.refresh_from_db()
        self.assertEqual(v2.state, ModelVersion.State.RETIRED)
        # Rolling back again goes back to v2: the previous one is always the other.
        self.assertEqual(services.model_version_rollback().version, v2)

    def test_rollback_without_a_previous_version_says_so(self):
        self._version("v1", ModelVersion.State.ACTIVE)
        with self.assertRaisesMessage(services.ModelVersionError, "no previously active"):
            services.model_version_rollback()

    def test_it_refuses_to_activate_a_failed_or_active_version_or_one_without_files(self):
        failed = self._version("v1", ModelVersion.State.FAILED)
        active = self._version("v2", ModelVersion.State.ACTIVE)
        missing = model_version_make("v3", artifact_dir=None)
        for version, text in ((failed, "only a candidate"), (active, "already the active")):
            with (
                self.subTest(version=version.name),
                self.assertRaisesMessage(services.ModelVersionError, text),
            ):
                services.model_version_activate(version=version)
        with self.assertRaisesMessage(services.ModelVersionError, "files of v3 are missing"):
            services.model_version_activate(version=missing)
        active.refresh_from_db()
        self.assertEqual(active.state, ModelVersion.State.ACTIVE)

    def test_the_database_refuses_a_second_active_version(self):
        self._version("v1", ModelVersion.State.ACTIVE)
        with self.assertRaises(IntegrityError), transaction.atomic():
            self._version("v2", ModelVersion.State.ACTIVE)


class RetrainRequestTests(BrokerMixin, BaseTestCase):
    def setUp(self):
        redis_flush()

    def _confirmed(self, n: int) -> None:
        for index in range(n):
            image_make(confirmed_grade=(0, 2)[index % 2])

    def test_a_retrain_request_queues_a_training_job(self):
        self._confirmed(12)
        with self.captureOnCommitCallbacks(execute=True):
            job, created = services.model_retrain_request(user=self.adam)
        self.assertTrue(created)
        self.assertEqual(
            (job.kind, job.params), (Job.Kind.MODEL_TRAIN, {"trigger": "manual", "mode": "head"})
        )

    def test_automatic_retraining_waits_for_enough_new_confirmed_grades(self):
        self._confirmed(12)
        self.assertIsNone(services.model_auto_retrain_check(), "off by default")
        WorkbenchSettings.objects.update_or_create(pk=1, defaults={"auto_retrain_after": 5})
        with self.captureOnCommitCallbacks(execute=True):
            job = services.model_auto_retrain_check()
        self.assertEqual(job.params["trigger"], "automatic")
        self.assertNotIn("activate_if_first", job.params, "an automatic retrain never activates")
        Job.objects.filter(pk=job.pk).update(state=Job.State.SUCCEEDED)
        self.assertIsNone(services.model_auto_retrain_check(), "no new grades since that job")
        self._confirmed(5)
        with self.captureOnCommitCallbacks(execute=True):
            self.assertIsNotNone(services.model_auto_retrain_check())


class TrainingConfigTests(BaseTestCase):
    def test_augmented_copies_come_with_test_time_averaging(self):
        with self.settings(FUNDUS_AUGMENT_VARIANTS=5):
            config = training_config_from_settings(classes=(0, 1, 2, 3, 4), referable_from=2)
        self.assertEqual(config.augment.variants, 5)
        self.assertTrue(config.tta)

    def test_no_copies_means_plain_prediction(self):
        with self.settings(FUNDUS_AUGMENT_VARIANTS=0):
            config = training_config_from_settings(classes=(0, 1, 2, 3, 4), referable_from=2)
        self.assertFalse(config.tta)

    def test_the_released_model_trains_on_every_image_and_cross_validation_scores_it(self):
        with self.settings(FUNDUS_CV_FOLDS=4):
            config = training_config_from_settings(classes=(0, 1, 2, 3, 4), referable_from=2)
        self.assertEqual(config.holdout_fraction, 0.0)
        self.assertEqual(config.n_splits, 4)


class EvaluationCatchUpTests(BrokerMixin, BaseTestCase):
    def setUp(self):
        redis_flush()

    def test_a_version_still_waiting_for_its_figures_gets_an_evaluation_job(self):
        self.assertIsNone(model_evaluation_catch_up())
        waiting = model_version_make("v1", metrics={"evaluation": "pending"})
        model_version_make("v0", state=ModelVersion.State.FAILED, metrics={"evaluation": "pending"})
        job = model_evaluation_catch_up()
        self.assertEqual((job.kind, job.model_version), (Job.Kind.MODEL_EVALUATE, waiting))
        self.assertIsNone(model_evaluation_catch_up(), "one open evaluation at a time")


class LegacyVersionFlagsTests(BaseTestCase):
    def test_the_migration_flags_what_an_older_hold_out_version_trained_on(self):
        import datetime as dt
        import importlib

        from django.apps import apps
        from django.utils import timezone

        from grading.models import Prediction

        migration = importlib.import_module("grading.migrations.0003_honest")
        held_out, trained, later = (image_make(confirmed_grade=g) for g in (0, 2, 3))
        pending = image_make()
        version = model_version_make("v1", holdout_sha256=[held_out.sha256])
        Image.objects.filter(pk=later.pk).update(confirmed_at=timezone.now() + dt.timedelta(days=1))
        for image in (held_out, trained, later, pending):
            Prediction.objects.create(
                image=image, model_version=version, probabilities=[0.2] * 5, predicted_grade_id=0
            )
        migration.flag_training_predictions(apps, None)
        flags = dict(version.predictions.values_list("image_id", "in_training"))
        self.assertEqual(
            flags, {held_out.pk: False, trained.pk: True, later.pk: False, pending.pk: False}
        )
