from __future__ import annotations

import csv
import json

import pytest
from PIL import Image

from mlcore.cli import main
from tests.mlcore.toy_backbones import (
    TOY,
    ensure_toy_backbones,
    write_graded_set,
    write_toy_weights,
)

ensure_toy_backbones()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    items = write_graded_set(root / "images", n_per_grade=8)
    with (root / "images" / "labels.csv").open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["filename", "grade"])
        for path, grade in items:
            writer.writerow([path.name, grade])
    write_toy_weights(root / "weights")
    return root


def _common(root) -> list[str]:
    return ["--store", str(root / "store"), "--weights-dir", str(root / "weights"), "--quiet"]


@pytest.fixture(scope="module")
def model_dir(workspace):
    out = workspace / "model"
    status = main(
        [
            "train",
            "--labels",
            str(workspace / "images" / "labels.csv"),
            "--out",
            str(out),
            "--backbones",
            TOY,
            "--epochs",
            "15",
            *_common(workspace),
        ]
    )
    assert status == 0
    return out


def test_train_writes_a_model_folder(model_dir):
    meta = json.loads((model_dir / "metadata.json").read_text())
    assert meta["backbones"] == [TOY]
    assert meta["metrics"]["n"] > 0


def test_predict_prints_and_writes_csv(workspace, model_dir, capsys):
    out_csv = workspace / "predictions.csv"
    status = main(
        [
            "predict",
            str(model_dir),
            str(workspace / "images"),
            "--csv",
            str(out_csv),
            *_common(workspace),
        ]
    )
    assert status == 0
    printed = capsys.readouterr().out
    assert "grade" in printed and "g2_000.png" in printed
    with out_csv.open(newline="") as file:
        rows = list(csv.reader(file))
    header = ["path", "grade", "p_grade_0", "p_grade_1", "p_grade_2", "p_grade_3", "p_grade_4"]
    assert rows[0] == header
    assert len(rows) == 1 + 24  # every image found recursively in the folder
    for row in rows[1:]:
        assert int(row[1]) in range(5)
        assert sum(float(v) for v in row[2:]) == pytest.approx(1.0, abs=1e-4)


def test_predict_refuses_a_model_of_other_backbones(workspace, model_dir, capsys):
    image = next((workspace / "images").glob("*.png"))
    status = main(
        ["predict", str(model_dir), str(image), "--backbones", "mobilenet_v2", *_common(workspace)]
    )
    assert status == 2
    assert "trained on features of backbones ['toy_bright']" in capsys.readouterr().err


@pytest.mark.slow
def test_evaluate_prints_a_cross_validation_summary(workspace, capsys):
    status = main(
        [
            "evaluate",
            "--labels",
            str(workspace / "images" / "labels.csv"),
            "--folds",
            "3",
            "--backbones",
            TOY,
            "--epochs",
            "10",
            "--out",
            str(workspace / "cv"),
            *_common(workspace),
        ]
    )
    assert status == 0
    printed = capsys.readouterr().out
    assert "3-fold cross-validation" in printed and "qwk" in printed
    assert (workspace / "cv" / "report.json").exists()


def test_cam_writes_an_overlay(workspace, model_dir, capsys):
    image = sorted((workspace / "images").glob("g1_*.png"))[0]
    out = workspace / "cam.png"
    status = main(
        [
            "cam",
            str(model_dir),
            str(image),
            "--out",
            str(out),
            "--weights-dir",
            str(workspace / "weights"),
        ]
    )
    assert status == 0
    with Image.open(out) as png, Image.open(image) as original:
        assert png.size == original.size
    assert "CAM of grade" in capsys.readouterr().out


def test_missing_labels_file_is_a_clear_error(workspace, capsys):
    status = main(["train", "--labels", str(workspace / "nope.csv"), "--out", str(workspace / "m")])
    assert status == 2
    assert "nope.csv" in capsys.readouterr().err
