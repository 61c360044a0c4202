from __future__ import annotations

from dataclasses import asdict, replace

import numpy as np
import pytest
from PIL import Image

from mlcore.data.augment import AugmentConfig
from mlcore.data.domain import RAW_TO_FILTERED, filter_like_training
from mlcore.data.preprocessing import load_rgb, looks_gaussian_filtered
from mlcore.features.extraction import compute_features, load_features
from mlcore.features.store import FeatureStore, store_path
from mlcore.models.artifact import load_artifact
from mlcore.pipelines.predict import DomainMismatchError, expand_image_paths, predict_images
from mlcore.pipelines.training import augment_store_dir
from tests.mlcore.toy_backbones import TOY, TOY_SIZE, lesion_image, train_toy_artifact


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return load_artifact(train_toy_artifact(tmp_path_factory.mktemp("predict") / "model"))


@pytest.fixture()
def filtered_images(tmp_path):
    folder = tmp_path / "uploads" / "nested"
    folder.mkdir(parents=True)
    paths = []
    for i, lesions in enumerate([[], [(10, 20)], [], [(25, 6)]]):
        path = folder / f"img{i}.png"
        Image.fromarray(lesion_image(TOY_SIZE, lesions, radius=3, seed=50 + i)).save(path)
        paths.append(path)
    return paths


def test_predicts_grades_and_probabilities_from_the_store(model, filtered_images, tmp_path):
    store = tmp_path / "store"
    predictions = predict_images(model, filtered_images, store_dir=store, weights=None)
    assert [p.grade for p in predictions] == [0, 1, 0, 1]
    for p in predictions:
        assert p.grades == [0, 1]
        assert sum(p.probabilities) == pytest.approx(1.0, abs=1e-5)
        assert p.preprocessing == "none" and p.raw_photo is False
        assert p.referable_probability == pytest.approx(p.probabilities[1])  # referable from 1
    # the features were stored, and are what the head saw
    stored = load_features(
        [p.key for p in predictions], config=model.feature_config, store_dir=store
    )
    proba = model.classifier.predict_proba(stored)
    assert np.allclose(proba, [p.probabilities for p in predictions], atol=1e-6)
    again = predict_images(model, filtered_images, store_dir=store, weights=None)
    assert [p.probabilities for p in again] == [p.probabilities for p in predictions]


def test_a_raw_photograph_is_filtered_into_the_training_domain(model, raw_fundus_dir, tmp_path):
    photo = sorted(raw_fundus_dir.glob("*.jpg"))[0]
    assert not looks_gaussian_filtered(load_rgb(photo, min_size=256))
    store = tmp_path / "store"
    (prediction,) = predict_images(model, [photo], store_dir=store, weights=None)
    assert prediction.raw_photo is True
    assert prediction.preprocessing == RAW_TO_FILTERED
    assert store_path(store, TOY, RAW_TO_FILTERED).exists()
    assert not store_path(store, TOY, "none").exists()
    # the stored features are those of the filtered photo, and a second call reuses them
    image = filter_like_training(load_rgb(photo, min_size=48), TOY_SIZE)
    expected = compute_features([image], config=model.feature_config, weights=None)
    path = store_path(store, TOY, RAW_TO_FILTERED)
    with FeatureStore(path, backbone=TOY, preprocessing=RAW_TO_FILTERED, feature_dim=3) as cached:
        stored = cached.get([prediction.key])
    assert np.allclose(stored, expected, atol=1e-6)
    (again,) = predict_images(model, [photo], store_dir=store, weights=None)
    assert again.probabilities == prediction.probabilities


def test_a_model_trained_on_raw_photos_refuses_filtered_images(filtered_images, tmp_path):
    raw_model = train_toy_artifact(tmp_path / "raw-model", training_domain="raw", n_images=40)
    with pytest.raises(DomainMismatchError, match="already Gaussian"):
        predict_images(raw_model, filtered_images[:1], store_dir=tmp_path / "s", weights=None)


def test_a_model_evaluated_with_tta_averages_over_the_same_copies(filtered_images, tmp_path):
    augment = replace(AugmentConfig(), variants=2)
    folder = train_toy_artifact(
        tmp_path / "tta-model",
        n_images=40,
        augmentation={**asdict(augment), "tta": True, "seed": 2017},
    )
    model = load_artifact(folder)
    # This separable toy problem gets a sharpening temperature that saturates every probability,
    # which would hide the averaging this test is about; calibration has tests of its own.
    model.classifier.temperature_ = 1.0
    store = tmp_path / "store"
    predictions = predict_images(model, filtered_images, store_dir=store, weights=None)
    original = load_features(
        [p.key for p in predictions], config=model.feature_config, store_dir=store
    )
    copies = load_features(
        [f"{p.key}#v{v}" for p in predictions for v in (1, 2)],
        config=model.feature_config,
        store_dir=augment_store_dir(store, augment, 2017),
    ).reshape(len(predictions), 2, -1)
    classifier = model.classifier
    expected = (
        classifier.predict_proba(original)
        + classifier.predict_proba(copies[:, 0])
        + classifier.predict_proba(copies[:, 1])
    ) / 3
    assert np.allclose([p.probabilities for p in predictions], expected, atol=1e-6)
    assert not np.allclose(expected, classifier.predict_proba(original), atol=1e-4)


def test_folders_are_searched_recursively(filtered_images, tmp_path):
    found = expand_image_paths([tmp_path / "uploads"])
    assert sorted(found) == sorted(filtered_images)
    with pytest.raises(FileNotFoundError, match="no such image"):
        expand_image_paths([tmp_path / "missing.png"])
