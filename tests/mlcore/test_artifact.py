from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from mlcore.features.config import FeatureConfig
from mlcore.models.artifact import (
    ArtifactError,
    ArtifactMismatchError,
    load_artifact,
    read_metadata,
    save_artifact,
)
from mlcore.models.classifier import HeadClassifier
from tests.mlcore.toy_backbones import TOY, TOY_DIM, TOY_OTHER, ensure_toy_backbones

ensure_toy_backbones()
CONFIG = FeatureConfig(backbones=(TOY, TOY_OTHER), preprocessing="none")


@pytest.fixture(scope="module")
def trained() -> tuple[HeadClassifier, np.ndarray]:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 5, 250)
    X = (rng.normal(size=(250, 2 * TOY_DIM)) + y[:, None]).astype(np.float32)
    classifier = HeadClassifier(epochs=15, patience=3, batch_size=16).fit(X, y)
    return classifier, X


@pytest.fixture(scope="module")
def saved(trained, tmp_path_factory):
    classifier, _ = trained
    folder = tmp_path_factory.mktemp("artifact") / "model"
    save_artifact(
        folder,
        classifier,
        feature_config=CONFIG,
        training_counts={0: 50, 1: 50, 2: 50, 3: 50, 4: 50},
        metrics={"qwk": 0.5},
    )
    return folder


def test_round_trip_gives_the_same_predictions(trained, saved):
    classifier, X = trained
    artifact = load_artifact(saved)
    assert np.allclose(artifact.classifier.predict_proba(X), classifier.predict_proba(X), atol=1e-6)
    assert np.array_equal(artifact.classifier.predict(X), classifier.predict(X))
    assert artifact.classifier.decoding_ == classifier.decoding_
    assert artifact.feature_config.backbones == (TOY, TOY_OTHER)
    assert artifact.classes == [0, 1, 2, 3, 4]


def test_folder_holds_head_scaler_and_metadata(saved):
    assert {p.name for p in saved.iterdir()} >= {"head.keras", "scaler.npz", "metadata.json"}
    meta = json.loads((saved / "metadata.json").read_text())
    assert meta["backbones"] == [TOY, TOY_OTHER]
    assert meta["preprocessing"] == "none"
    assert meta["training_domain"] == "gaussian_filtered"
    assert meta["raw_photo_preprocessing"] == "raw_to_filtered"
    assert meta["feature_dims"] == {TOY: TOY_DIM, TOY_OTHER: TOY_DIM}
    assert meta["class_labels"]["0"] == "No DR" and meta["class_labels"]["4"] == "Proliferative DR"
    assert meta["training_counts"] == {str(g): 50 for g in range(5)}
    assert meta["seed"] == 2017
    assert meta["library_versions"]["tensorflow"] and meta["library_versions"]["keras"]
    assert meta["metrics"] == {"qwk": 0.5}


def test_it_refuses_other_backbones(saved):
    with pytest.raises(ArtifactMismatchError, match=r"toy_bright.*are configured"):
        load_artifact(saved, backbones=("efficientnet_lite0", "mobilenet_v2"))
    with pytest.raises(ArtifactMismatchError, match="same order|configured"):
        load_artifact(saved, backbones=(TOY_OTHER, TOY))
    assert load_artifact(saved, backbones=(TOY, TOY_OTHER)).classes == [0, 1, 2, 3, 4]


def test_it_refuses_a_backbone_unknown_here_or_with_another_dimension(saved, tmp_path):
    meta = json.loads((saved / "metadata.json").read_text())
    for field, value, message in (
        ("backbones", ["no_such_net", TOY_OTHER], "not registered"),
        ("feature_dims", {TOY: 7, TOY_OTHER: TOY_DIM}, "expects 7 features"),
    ):
        broken = tmp_path / field
        broken.mkdir()
        for name in ("head.keras", "scaler.npz"):
            (broken / name).write_bytes((saved / name).read_bytes())
        changed = dict(meta)
        changed[field] = value
        if field == "backbones":
            changed["feature_dims"] = {"no_such_net": TOY_DIM, TOY_OTHER: TOY_DIM}
        (broken / "metadata.json").write_text(json.dumps(changed))
        with pytest.raises(ArtifactMismatchError, match=message):
            load_artifact(broken)


def test_it_refuses_a_head_that_does_not_fit_the_backbones(trained, tmp_path):
    classifier, _ = trained
    with pytest.raises(ArtifactMismatchError, match="takes 6 features"):
        save_artifact(
            tmp_path / "m",
            classifier,
            feature_config=FeatureConfig(backbones=(TOY,)),
            training_counts={0: 1},
        )


def test_incomplete_or_foreign_folders_fail_clearly(saved, tmp_path):
    with pytest.raises(ArtifactError, match="no metadata.json"):
        load_artifact(tmp_path)
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "metadata.json").write_text((saved / "metadata.json").read_text())
    with pytest.raises(ArtifactError, match="no head.keras"):
        load_artifact(partial)
    with pytest.raises(ArtifactError, match="unfitted"):
        save_artifact(tmp_path / "x", HeadClassifier(), feature_config=CONFIG, training_counts={})


def test_saving_over_an_existing_model_replaces_it(trained, saved, tmp_path):
    classifier, _ = trained
    folder = tmp_path / "model"
    save_artifact(folder, classifier, feature_config=CONFIG, training_counts={0: 1})
    (folder / "stale.txt").write_text("old report")
    save_artifact(folder, classifier, feature_config=CONFIG, training_counts={0: 2})
    assert not (folder / "stale.txt").exists()
    assert read_metadata(folder)["training_counts"]["0"] == 2
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # no staging folders left


def test_metadata_reads_without_tensorflow(saved):
    code = (
        "import sys; from mlcore.models.artifact import read_metadata; "
        f"read_metadata({str(saved)!r}); "
        "sys.exit(1 if 'tensorflow' in sys.modules else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True)
    assert result.returncode == 0, result.stderr.decode()[-500:]
