"""Feature configuration from arguments and the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlcore.features.config import (
    REPO_ROOT,
    ConfigError,
    FeatureConfig,
    default_store_dir,
    default_weights_dir,
)


def test_the_defaults_work_offline() -> None:
    config = FeatureConfig()
    assert config.backbones == ("efficientnet_lite0", "mobilenet_v2")
    assert (config.preprocessing, config.dtype, config.batch_size) == ("none", "float32", 32)


def test_the_environment_selects_backbones_preprocessing_and_dtype() -> None:
    config = FeatureConfig.from_env(
        {
            "FUNDUS_BACKBONES": "resnet50, inception_v3,xception",
            "FUNDUS_PREPROCESSING": "ben_graham",
            "FUNDUS_FEATURE_DTYPE": "float16",
            "FUNDUS_FEATURE_BATCH_SIZE": "8",
        }
    )
    assert config == FeatureConfig(
        backbones=("resnet50", "inception_v3", "xception"),
        preprocessing="ben_graham",
        dtype="float16",
        batch_size=8,
    )


def test_arguments_override_the_environment() -> None:
    config = FeatureConfig.from_env(
        {"FUNDUS_BACKBONES": "resnet50"}, backbones=("vgg16",), preprocessing=None
    )
    assert config.backbones == ("vgg16",) and config.preprocessing == "none"


def test_a_list_of_backbones_is_kept_hashable() -> None:
    config = FeatureConfig(backbones=["mobilenet_v2"])  # type: ignore[arg-type]
    assert config.backbones == ("mobilenet_v2",)
    assert hash(config)


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"FUNDUS_BACKBONES": " , "}, "names no backbone"),
        ({"FUNDUS_PREPROCESSING": "clahe"}, "unknown preprocessing 'clahe'; known: ben_graham"),
        ({"FUNDUS_FEATURE_DTYPE": "int8"}, "dtype must be one of"),
        ({"FUNDUS_FEATURE_BATCH_SIZE": "many"}, "must be an integer"),
        ({"FUNDUS_FEATURE_BATCH_SIZE": "0"}, "batch_size must be >= 1"),
        ({"FUNDUS_BACKBONES": "vgg16,vgg16"}, "duplicate backbone"),
    ],
)
def test_bad_values_fail_loudly(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        FeatureConfig.from_env(environ)


def test_folders_come_from_the_environment(tmp_path: Path) -> None:
    assert default_weights_dir({}) is None
    assert default_weights_dir({"FUNDUS_WEIGHTS_DIR": str(tmp_path)}) == tmp_path
    assert default_store_dir({}) == REPO_ROOT / "var" / "features"
    assert default_store_dir({"FUNDUS_FEATURE_STORE": str(tmp_path)}) == tmp_path
