"""Configuration of feature extraction: the ``FeatureConfig`` dataclass and the folders.

``FeatureConfig.from_env``, ``default_weights_dir`` and ``default_store_dir`` read ``FUNDUS_*``
environment variables: they are the command line's defaults (``python -m mlcore``). A caller
with its own settings (the web app) passes values explicitly instead (``FeatureConfig(...)``,
``weights_dir=``, ``store_dir=``).

Imported by the web process: must not import TensorFlow (nor anything that does).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

DEFAULT_BACKBONES: tuple[str, ...] = ("efficientnet_lite0", "mobilenet_v2")
STORAGE_DTYPES: tuple[str, ...] = ("float32", "float16")


class ConfigError(ValueError):
    """A configuration value (argument or environment variable) is invalid."""


def _parse_backbones(value: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in value.split(",") if name.strip())
    if not names:
        raise ConfigError("FUNDUS_BACKBONES is set but names no backbone")
    return names


@dataclass(frozen=True)
class FeatureConfig:
    """Which features to extract and how to store them.

    - ``backbones``: registry names (``mlcore.features.backbones.available_backbones()``); features of
      several backbones are concatenated in this order by ``load_features``.
    - ``preprocessing``: one of ``mlcore.data.preprocessing.PREPROCESSING`` (recorded in the store).
    - ``dtype``: storage precision, ``"float32"`` or ``"float16"`` (halves the disk size);
      features are always returned as float32.
    - ``batch_size``: images per forward pass.
    """

    backbones: tuple[str, ...] = DEFAULT_BACKBONES
    preprocessing: str = "none"
    dtype: str = "float32"
    batch_size: int = 32

    def __post_init__(self) -> None:
        # Accept a list for convenience but keep the frozen dataclass hashable.
        if not isinstance(self.backbones, tuple):
            object.__setattr__(self, "backbones", tuple(self.backbones))
        if not self.backbones:
            raise ConfigError("FeatureConfig needs at least one backbone")
        if len(set(self.backbones)) != len(self.backbones):
            raise ConfigError(f"duplicate backbone in {self.backbones}")
        if self.dtype not in STORAGE_DTYPES:
            raise ConfigError(f"dtype must be one of {STORAGE_DTYPES}, not {self.dtype!r}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, not {self.batch_size}")
        # Deferred import keeps the module graph simple; preprocessing is numpy/Pillow only.
        from mlcore.data.preprocessing import PREPROCESSING

        if self.preprocessing not in PREPROCESSING:
            raise ConfigError(
                f"unknown preprocessing {self.preprocessing!r}; "
                f"known: {', '.join(sorted(PREPROCESSING))}"
            )

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: object) -> FeatureConfig:
        """Build from ``FUNDUS_BACKBONES``, ``FUNDUS_PREPROCESSING``, ``FUNDUS_FEATURE_DTYPE``
        (and ``FUNDUS_FEATURE_BATCH_SIZE``); unset variables keep the defaults, keyword
        overrides win over both."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        if env.get("FUNDUS_BACKBONES"):
            values["backbones"] = _parse_backbones(env["FUNDUS_BACKBONES"])
        if env.get("FUNDUS_PREPROCESSING"):
            values["preprocessing"] = env["FUNDUS_PREPROCESSING"].strip()
        if env.get("FUNDUS_FEATURE_DTYPE"):
            values["dtype"] = env["FUNDUS_FEATURE_DTYPE"].strip()
        if env.get("FUNDUS_FEATURE_BATCH_SIZE"):
            raw = env["FUNDUS_FEATURE_BATCH_SIZE"]
            try:
                values["batch_size"] = int(raw)
            except ValueError:
                raise ConfigError(
                    f"FUNDUS_FEATURE_BATCH_SIZE must be an integer, not {raw!r}"
                ) from None
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]  # __post_init__ checks the values


def default_weights_dir(environ: dict[str, str] | None = None) -> Path | None:
    """The offline weights folder from ``FUNDUS_WEIGHTS_DIR`` (None when unset)."""
    env = os.environ if environ is None else environ
    value = env.get("FUNDUS_WEIGHTS_DIR", "").strip()
    return Path(value).expanduser() if value else None


def default_store_dir(environ: dict[str, str] | None = None) -> Path:
    """The feature store folder from ``FUNDUS_FEATURE_STORE`` (default ``<repo>/var/features``)."""
    env = os.environ if environ is None else environ
    value = env.get("FUNDUS_FEATURE_STORE", "").strip()
    return Path(value).expanduser() if value else REPO_ROOT / "var" / "features"
