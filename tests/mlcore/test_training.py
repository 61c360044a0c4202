from __future__ import annotations

import json
from dataclasses import asdict, replace

import numpy as np
import pytest

from mlcore.data.augment import AugmentConfig
from mlcore.features.config import FeatureConfig
from mlcore.features.store import FeatureStore, parse_feature_key, store_path
from mlcore.models.artifact import load_artifact
from mlcore.pipelines.training import (
    LabelsError,
    TrainingConfig,
    augment_store_dir,
    evaluate_cv,
    read_labels_csv,
    train_model,
)
from tests.mlcore.toy_backbones import (
    TOY,
    TOY_DIM,
    ensure_toy_backbones,
    write_graded_set,
    write_toy_weights,
)

ensure_toy_backbones()
FEATURES = FeatureConfig(backbones=(TOY,))
CONFIG = TrainingConfig(
    classes=(0, 1, 2),
    holdout_fraction=0.25,
    augment=replace(AugmentConfig(), variants=2),
    head={"epochs": 20, "patience": 3, "batch_size": 8},
)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("training")
    items = write_graded_set(root / "images", n_per_grade=10)
    paths = [p for p, _ in items]
    grades = [g for _, g in items]
    patients = [f"patient-{i // 2}" for i in range(len(paths))]  # two eyes per patient
    return root, paths, grades, patients


@pytest.fixture(scope="module")
def trained(dataset):
    root, paths, grades, patients = dataset
    progress = []
    result = train_model(
        paths,
        grades,
        groups=patients,
        out_dir=root / "model",
        feature_config=FEATURES,
        training_config=CONFIG,
        store_dir=root / "store",
        weights_dir=write_toy_weights(root / "weights").parent,
        progress=lambda percent, message: progress.append((percent, message)),
    )
    return result, progress


def test_it_writes_a_complete_model_folder(trained):
    result, _ = trained
    names = {p.name for p in result.artifact_dir.iterdir()}
    assert names >= {
        "head.keras",
        "scaler.npz",
        "metadata.json",
        "report.json",
        "confusion.png",
        "curves.png",
    }
    meta = json.loads((result.artifact_dir / "metadata.json").read_text())
    assert sum(meta["training_counts"].values()) == result.n_train
    assert meta["metrics"]["n"] == result.n_test
    assert meta["augmentation"] == {**asdict(CONFIG.augment), "tta": False, "seed": 2017}
    artifact = load_artifact(result.artifact_dir)
    assert artifact.classes == [0, 1, 2]


def test_no_patient_and_no_augmented_copy_crosses_the_split(dataset, trained):
    root, paths, _, patients = dataset
    result, _ = trained
    from mlcore.features.extraction import file_sha256

    patient_of = {file_sha256(p): patient for p, patient in zip(paths, patients, strict=True)}
    train_sources = {parse_feature_key(k)[0] for k in result.train_keys}
    test_sources = {parse_feature_key(k)[0] for k in result.test_keys}
    assert train_sources and test_sources
    assert not train_sources & test_sources
    assert not {patient_of[s] for s in train_sources} & {patient_of[s] for s in test_sources}
    # every augmented copy that was computed belongs to a training image
    folder = augment_store_dir(root / "store", CONFIG.augment, CONFIG.seed)
    path = store_path(folder, TOY, "none")
    with FeatureStore(path, backbone=TOY, preprocessing="none", feature_dim=TOY_DIM, mode="r") as s:
        variant_keys = s.keys()
    assert len(variant_keys) == 2 * result.n_train
    assert {parse_feature_key(k)[0] for k in variant_keys} == train_sources
    assert {parse_feature_key(k)[1] for k in variant_keys} == {1, 2}


def test_progress_is_reported_in_percent(trained):
    _, progress = trained
    percents = [p for p, _ in progress]
    assert percents[0] == 0 and percents[-1] == 100
    assert all(0 <= p <= 100 for p in percents)
    assert percents == sorted(percents)


@pytest.mark.slow
def test_training_again_gives_the_same_model(dataset, trained, tmp_path):
    root, paths, grades, patients = dataset
    first, _ = trained
    second = train_model(
        paths,
        grades,
        groups=patients,
        out_dir=tmp_path / "again",
        feature_config=FEATURES,
        training_config=CONFIG,
        store_dir=root / "store",
        weights_dir=root / "weights",
    )
    assert second.test_keys == first.test_keys
    assert second.metrics == first.metrics
    for a, b in zip(
        first.classifier.model_.get_weights(), second.classifier.model_.get_weights(), strict=True
    ):
        assert np.array_equal(a, b)


@pytest.mark.slow
def test_cross_validation_report(dataset, tmp_path):
    root, paths, grades, patients = dataset
    config = replace(CONFIG, n_splits=3, augment=AugmentConfig())
    result = evaluate_cv(
        paths,
        grades,
        groups=patients,
        feature_config=FEATURES,
        training_config=config,
        store_dir=root / "store",
        weights_dir=root / "weights",
        out_dir=tmp_path / "report",
    )
    assert len(result.folds) == 3
    assert result.pooled["n"] == len(paths)
    assert result.summary["qwk"]["n"] == 3
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["summary"]["accuracy"]["mean"] == pytest.approx(
        result.summary["accuracy"]["mean"]
    )
    assert (tmp_path / "report" / "confusion.png").exists()


def test_labels_csv(tmp_path):
    (tmp_path / "a").mkdir()
    for name in ("a/aptos2019_id1.jpg", "a/aptos2019_id2.jpg", "a/aptos2019_id3.jpg"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "labels.csv").write_text(
        "filename,grade\na/aptos2019_id1.jpg,0\na/aptos2019_id2.jpg,2\na/aptos2019_id3.jpg,4\n"
    )
    (tmp_path / "dups.txt").write_text("# near duplicates\nid1 id3\n")
    labels = read_labels_csv(tmp_path / "labels.csv", groups_file=tmp_path / "dups.txt")
    assert labels.grades == [0, 2, 4]
    assert labels.groups[0] == labels.groups[2] != labels.groups[1]
    (tmp_path / "bad.csv").write_text("filename,grade\na/aptos2019_id1.jpg,severe\n")
    with pytest.raises(LabelsError, match="not an integer"):
        read_labels_csv(tmp_path / "bad.csv")
    (tmp_path / "nogrades.csv").write_text("filename\na/aptos2019_id1.jpg\n")
    with pytest.raises(LabelsError, match="no 'grade' column"):
        read_labels_csv(tmp_path / "nogrades.csv")


def test_bad_training_input_is_rejected(dataset, tmp_path):
    _, paths, grades, _ = dataset
    with pytest.raises(LabelsError, match="not on the scale"):
        train_model(
            paths[:3],
            [0, 1, 7],
            out_dir=tmp_path / "m",
            training_config=CONFIG,
            feature_config=FEATURES,
        )
    with pytest.raises(LabelsError, match="3 images but 2 grades"):
        train_model(paths[:3], [0, 1], out_dir=tmp_path / "m", feature_config=FEATURES)
    with pytest.raises(ValueError, match="tta needs"):
        TrainingConfig(tta=True)


def test_training_maps_raw_photographs_into_the_training_domain_like_prediction(
    dataset, raw_fundus_dir, tmp_path
):
    from mlcore.data.domain import RAW_TO_FILTERED
    from mlcore.features.extraction import image_items
    from mlcore.pipelines.predict import predict_images

    _, paths, grades, _ = dataset
    photos = sorted(raw_fundus_dir.glob("*.jpg"))[:2]
    store = tmp_path / "store"
    weights = write_toy_weights(tmp_path / "weights").parent
    result = train_model(
        [*paths, *photos],
        [*grades, 0, 1],
        out_dir=tmp_path / "model",
        feature_config=FEATURES,
        training_config=replace(CONFIG, holdout_fraction=0.0, augment=AugmentConfig()),
        store_dir=store,
        weights_dir=weights,
    )
    assert result.n_train == len(paths) + 2
    photo_keys = [item.key for item in image_items(photos)]
    # The raw photographs were trained on through the raw-photo filter, never unfiltered...
    mapped = store_path(store, TOY, RAW_TO_FILTERED)
    with FeatureStore(
        mapped, backbone=TOY, preprocessing=RAW_TO_FILTERED, feature_dim=TOY_DIM
    ) as cached:
        assert cached.missing(photo_keys) == []
        trained_on = cached.get(photo_keys)
    with FeatureStore(
        store_path(store, TOY, "none"), backbone=TOY, preprocessing="none", feature_dim=TOY_DIM
    ) as plain:
        assert plain.missing(photo_keys) == photo_keys
    # ...which is what prediction applies to them: the same features reach the head.
    predictions = predict_images(result.artifact_dir, photos, store_dir=store, weights_dir=weights)
    assert [p.preprocessing for p in predictions] == [RAW_TO_FILTERED] * 2
    with FeatureStore(
        mapped, backbone=TOY, preprocessing=RAW_TO_FILTERED, feature_dim=TOY_DIM
    ) as cached:
        assert np.array_equal(cached.get(photo_keys), trained_on)


def test_it_stores_an_out_of_distribution_distance_set_on_the_inner_split(trained, dataset):
    from mlcore.models.ood import ood_load

    result, _ = trained
    scorer = ood_load(result.artifact_dir)
    assert scorer is not None
    assert scorer.n_fit_ + scorer.n_check_ == result.n_train
    features = np.random.default_rng(0).normal(size=(3, scorer.mean_.size)) * 100
    assert (scorer.score(features) > 1).all()


def test_prediction_scores_photos_against_the_stored_distance(trained, dataset):
    from mlcore.features.store import feature_key
    from mlcore.pipelines.ood import ood_scores_images, ood_scores_stored

    root, paths, _, _ = dataset
    result, _ = trained
    artifact = load_artifact(result.artifact_dir)
    weights = write_toy_weights(root / "weights").parent
    from_files = ood_scores_images(
        artifact, paths[:3], store_dir=root / "store", weights_dir=weights
    )
    assert all(isinstance(score, float) and score >= 0 for score in from_files)
    keys = [feature_key(key.split("#")[0]) for key in result.train_keys[:3]]
    from_store = ood_scores_stored(artifact, keys, store_dir=root / "store")
    assert all(isinstance(score, float) for score in from_store)
    # The training photographs themselves lie inside the domain, as most must.
    assert sum(score <= 1.0 for score in from_store) >= 2
