"""``python -m mlcore extract``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mlcore.cli import main
from mlcore.features import backbones
from mlcore.features.store import FeatureStore, store_path

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def small_csv(tmp_path: Path, fundus_dataset_dir: Path) -> Path:
    """A CSV naming 5 dataset images (absolute paths: the dataset folder is read-only)."""
    rows = (fundus_dataset_dir / "labels.csv").read_text().splitlines()[1:6]
    lines = ["filename,grade"] + [
        f"{(fundus_dataset_dir / row.split(',')[0]).as_posix()},{row.split(',')[1]}" for row in rows
    ]
    out = tmp_path / "images.csv"
    out.write_text("\n".join(lines) + "\n")
    return out


@pytest.mark.slow
def test_it_extracts_a_csv_then_reuses_the_store(
    tmp_path: Path, small_csv: Path, weights_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store_dir = tmp_path / "store"
    argv = [
        "extract",
        "--images",
        str(small_csv),
        "--store",
        str(store_dir),
        "--backbones",
        "mobilenet_v2",
        "--weights-dir",
        str(weights_dir),
        "--batch-size",
        "2",
        "--quiet",
    ]
    assert main(argv) == 0
    assert "mobilenet_v2: 5 computed, 0 already stored" in capsys.readouterr().out
    path = store_path(store_dir, "mobilenet_v2", "none")
    store = FeatureStore(
        path, backbone="mobilenet_v2", preprocessing="none", feature_dim=1280, mode="r"
    )
    assert len(store) == 5
    assert main(argv) == 0
    assert "mobilenet_v2: 0 computed, 5 already stored" in capsys.readouterr().out


def test_an_unknown_backbone_is_a_one_line_error(
    tmp_path: Path, small_csv: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(
        [
            "extract",
            "--images",
            str(small_csv),
            "--store",
            str(tmp_path),
            "--backbones",
            "resnet50,alexnet",
        ]
    )
    assert status == 2
    assert "unknown backbone 'alexnet'; known backbones:" in capsys.readouterr().err


def test_missing_weights_tell_where_to_put_them(
    tmp_path: Path,
    small_csv: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def offline(spec: backbones.BackboneSpec) -> Path:
        raise OSError("no internet")

    monkeypatch.setattr(backbones, "_download_keras_weights", offline)
    monkeypatch.setattr(backbones, "keras_cache_dirs", lambda: [tmp_path / "cache"])
    status = main(
        [
            "extract",
            "--images",
            str(small_csv),
            "--store",
            str(tmp_path / "s"),
            "--backbones",
            "resnet50",
            "--weights-dir",
            str(tmp_path),
            "--quiet",
        ]
    )
    assert status == 2
    error = capsys.readouterr().err
    assert "'resnet50'" in error and "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5" in error
    assert "FUNDUS_WEIGHTS_DIR" in error


def test_a_missing_image_source_is_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["extract", "--images", str(tmp_path / "nothing"), "--store", str(tmp_path)]) == 2
    assert "neither a folder nor a CSV" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["extract", "--images", str(tmp_path / "empty"), "--store", str(tmp_path)]) == 2
    assert "no images found" in capsys.readouterr().err


def test_python_dash_m_mlcore_shows_the_extract_command() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "mlcore", "extract", "--help"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "--images" in completed.stdout and "--backbones" in completed.stdout
