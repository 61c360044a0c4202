"""Fine-tuning mode: CLI train + predict, checkpoints and resume, cached maps, Lite1/Lite2."""

from __future__ import annotations

import argparse
import csv
import json

import numpy as np
import pytest

from mlcore.cli import main
from mlcore.models.finetune import FinetuneConfig, finetune_fit
from tests.mlcore.toy_backbones import (
    TOY,
    ensure_toy_backbones,
    write_graded_set,
    write_toy_weights,
)

ensure_toy_backbones()


class Killed(Exception):
    """Stands in for a worker killed mid-epoch."""


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("finetune")
    items = write_graded_set(root / "images", n_per_grade=8)
    with (root / "images" / "labels.csv").open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["filename", "grade"])
        for path, grade in items:
            writer.writerow([path.name, grade])
    write_toy_weights(root / "weights")
    return root, items


def _config(**overrides) -> FinetuneConfig:
    values = {
        "backbone": TOY,
        "top_blocks": None,
        "epochs": 3,
        "learning_rates": (3e-2,),
        "batch_size": 8,
        "classes": (0, 1, 2),
        "variants": 1,
    }
    values.update(overrides)
    return FinetuneConfig(**values)


@pytest.fixture(scope="module")
def cli_model(workspace):
    """A model folder trained by ``train --mode finetune`` with the default flip averaging."""
    root, _items = workspace
    out = root / "model"
    status = main(
        [
            "train",
            "--mode",
            "finetune",
            "--labels",
            str(root / "images" / "labels.csv"),
            "--out",
            str(out),
            "--backbone",
            TOY,
            "--top-blocks",
            "all",
            "--epochs",
            "2",
            "--batch-size",
            "8",
            "--learning-rates",
            "1e-2,3e-2",
            "--holdout",
            "0.2",
            "--weights-dir",
            str(root / "weights"),
            "--quiet",
        ]
    )
    assert status == 0
    return out


def test_it_fine_tunes_and_predicts_through_the_cli(workspace, cli_model):
    root, _items = workspace
    out = cli_model
    common = ["--weights-dir", str(root / "weights"), "--quiet"]
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["kind"] == "finetuned"
    assert meta["finetune"]["chosen_learning_rate"] in (1e-2, 3e-2)
    assert meta["head"]["temperature"] > 0
    assert meta["outputs"]["decoding"] in ("argmax", "ordinal")
    assert meta["metrics"]["ece"] is not None
    assert not (root / "model.checkpoints").exists()  # removed once the model is saved

    predictions = root / "predictions.csv"
    status = main(["predict", str(out), str(root / "images"), "--csv", str(predictions), *common])
    assert status == 0
    with predictions.open(newline="") as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == 24
    for row in rows:
        proba = [float(row[f"p_grade_{g}"]) for g in range(5)]  # the ICDR scale
        assert sum(proba) == pytest.approx(1.0, abs=1e-4)
        assert int(row["grade"]) in range(5)

    # The activation map of a fine-tuned network comes from its own last maps and dense layer,
    # with the same calibrated probabilities as the prediction.
    image = root / "images" / "g2_000.png"
    status = main(["cam", str(out), str(image), "--out", str(root / "cam.png"), *common[:2]])
    assert status == 0
    assert (root / "cam.png").stat().st_size > 0
    from mlcore.pipelines.cam import class_activation_map

    cam = class_activation_map(out, image, weights_dir=root / "weights")
    predicted = next(r for r in rows if r["path"].endswith("g2_000.png"))
    assert cam.predicted_grade == int(predicted["grade"])
    assert cam.probabilities == pytest.approx(
        [float(predicted[f"p_grade_{g}"]) for g in range(5)], abs=1e-4
    )


def test_the_served_model_averages_its_four_mirror_flips(workspace, cli_model, tmp_path):
    """The recipe search's winner averages flips (``ft_whole_tta``): the default model folder
    records them, serves their mean, and a folder written before them loads without."""
    import shutil

    from mlcore.models.artifact import load_artifact
    from mlcore.models.finetune import load_images
    from mlcore.models.finetuned import ALL_FLIPS, NO_FLIPS, flipped

    root, items = workspace
    meta = json.loads((cli_model / "metadata.json").read_text())
    assert meta["finetune"]["config"]["test_flips"] == list(ALL_FLIPS)
    model = load_artifact(cli_model).classifier
    assert model.flips == ALL_FLIPS
    images = load_images([path for path, _grade in items[:6]], size=model.input_size)
    views = [model.predict_proba(flipped(images, f), flips=NO_FLIPS) for f in ALL_FLIPS]
    np.testing.assert_allclose(model.predict_proba(images), np.mean(views, axis=0), atol=1e-6)

    older = tmp_path / "older"
    shutil.copytree(cli_model, older)
    del meta["finetune"]["config"]["test_flips"]
    (older / "metadata.json").write_text(json.dumps(meta))
    old_model = load_artifact(older).classifier
    assert old_model.flips == NO_FLIPS
    np.testing.assert_allclose(old_model.predict_proba(images), views[0], atol=1e-6)


def test_flip_averaging_grades_the_mean_of_the_mirrored_views():
    """With a network that sees left from right (dense on the flattened pixels), the served
    probabilities are the mean over the four mirrored views, not the plain view's."""
    import keras

    from mlcore.models.calibration import Decoding
    from mlcore.models.finetuned import ALL_FLIPS, NO_FLIPS, FinetunedModel, flipped
    from tests.mlcore.toy_backbones import TOY_SIZE

    keras.utils.set_random_seed(0)
    network = keras.Sequential(
        [keras.Input((TOY_SIZE, TOY_SIZE, 3)), keras.layers.Flatten(), keras.layers.Dense(3)]
    )
    model = FinetunedModel(
        network=network, backbone=TOY, classes=(0, 1, 2), temperature=1.5,
        decoding=Decoding("argmax", None), flips=ALL_FLIPS,
    )  # fmt: skip
    images = np.random.default_rng(0).integers(0, 255, (4, TOY_SIZE, TOY_SIZE, 3), np.uint8)
    views = [model.predict_proba(flipped(images, f), flips=NO_FLIPS) for f in ALL_FLIPS]
    assert np.abs(views[0] - views[1]).max() > 1e-3  # a mirror changes this network's output
    averaged = model.predict_proba(images)
    np.testing.assert_allclose(averaged, np.mean(views, axis=0), atol=1e-9)
    assert np.abs(averaged - views[0]).max() > 1e-4
    with pytest.raises(ValueError, match="flips"):
        FinetunedModel(
            network=network, backbone=TOY, classes=(0, 1, 2), temperature=1.0,
            decoding=Decoding("argmax", None), flips=(5,),
        )  # fmt: skip


def test_flip_averaging_can_be_turned_off_and_must_name_real_flips():
    from mlcore.cli.model import _finetune_config
    from mlcore.models.finetuned import NO_FLIPS

    args = argparse.Namespace(
        backbone=TOY, top_blocks="all", learning_rates="3e-4", epochs=None, batch_size=8,
        variants=0, seed=1, mixed_precision="off", no_flip_averaging=True,
    )  # fmt: skip
    assert _finetune_config(args).test_flips == NO_FLIPS
    with pytest.raises(ValueError, match="test_flips"):
        FinetuneConfig(test_flips=(4,))
    with pytest.raises(ValueError, match="test_flips"):
        FinetuneConfig(test_flips=())


def test_it_rejects_a_bad_top_blocks_value(workspace, capsys):
    root, _items = workspace
    status = main(
        [
            "train",
            "--mode",
            "finetune",
            "--labels",
            str(root / "images" / "labels.csv"),
            "--out",
            str(root / "never"),
            "--backbone",
            TOY,
            "--top-blocks",
            "some",
            "--quiet",
        ]
    )
    assert status == 2
    assert "--top-blocks" in capsys.readouterr().err


def test_a_killed_run_resumes_after_the_last_completed_epoch(workspace, tmp_path):
    _root, items = workspace
    paths, grades = [p for p, _ in items], [g for _, g in items]
    config = _config(epochs=3)
    seen = []

    def kill_in_second_epoch(percent: int, message: str) -> None:
        seen.append(message)
        if message.startswith("epoch 2/3, batch 2/"):
            raise Killed

    with pytest.raises(Killed):
        finetune_fit(
            paths,
            grades,
            config=config,
            checkpoint_dir=tmp_path,
            weights=None,
            progress=kill_in_second_epoch,
        )
    completed = sorted(p.name for p in (tmp_path / "candidate-0").glob("epoch-*"))
    assert completed == ["epoch-001"]

    messages = []
    result = finetune_fit(
        paths,
        grades,
        config=config,
        checkpoint_dir=tmp_path,
        weights=None,
        progress=lambda percent, message: messages.append(message),
    )
    assert result.chosen.resumed_from_epoch == 1
    assert [h["epoch"] for h in result.chosen.history] == [1, 2, 3]
    assert not any(m.startswith("epoch 1/3") for m in messages)  # epoch 1 was not redone
    proba = result.model.predict_proba(
        np.full((2, 32, 32, 3), 128, np.uint8)
    )  # calibrated probabilities
    assert proba.shape == (2, 3)
    assert np.allclose(proba.sum(axis=1), 1.0)


def test_it_refuses_to_resume_another_runs_checkpoints(workspace, tmp_path):
    _root, items = workspace
    paths, grades = [p for p, _ in items], [g for _, g in items]
    finetune_fit(paths, grades, config=_config(epochs=1), checkpoint_dir=tmp_path, weights=None)
    with pytest.raises(ValueError, match="another run"):
        finetune_fit(
            paths,
            grades,
            config=_config(epochs=1, learning_rates=(1e-3,)),
            checkpoint_dir=tmp_path,
            weights=None,
        )


def test_the_cached_route_trains_only_above_the_cut(workspace, tmp_path):
    _root, items = workspace
    paths, grades = [p for p, _ in items], [g for _, g in items]
    config = _config(cut_layer="bright", epochs=2)
    result = finetune_fit(paths, grades, config=config, checkpoint_dir=tmp_path, weights=None)
    network = result.model.network_
    assert not network.get_layer("bright").trainable  # below the cut: frozen
    assert network.get_layer("ft_logits").trainable
    assert result.model.info_["cut_layer"] == "bright"
    assert result.calibration["n_validation"] > 0


@pytest.mark.parametrize("variant", ["lite1", "lite2"])
def test_lite1_and_lite2_layouts_match_their_packaged_weights(variant):
    from mlcore.features.backbones import get_backbone, resolve_weights
    from mlcore.features.efficientnet_lite import _block_layout
    from mlcore.features.torch_legacy import load_torch_state_dict

    state = load_torch_state_dict(resolve_weights(f"efficientnet_{variant}"))
    layout = _block_layout(variant)
    depthwise = [state[f"_blocks.{i}._depthwise_conv.weight"].shape[0] for i in range(len(layout))]
    assert f"_blocks.{len(layout)}._depthwise_conv.weight" not in state
    assert depthwise == [fin * expand for _k, _s, expand, fin, _fout in layout]
    assert (
        get_backbone(f"efficientnet_{variant}").input_size == {"lite1": 240, "lite2": 260}[variant]
    )
