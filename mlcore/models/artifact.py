"""Model artifact: a folder holding everything needed to grade new images.

- ``head.keras``: the Dropout -> Dense(softmax) head;
- ``scaler.npz``: the feature standardisation (``mean``, ``scale``) fitted on the training split;
- ``metadata.json``: backbones and preprocessing (and the training images' domain), class labels,
  feature dimensions, training images per grade, seed, head parameters and decoding (ordinal
  thresholds), library versions and evaluation metrics;
- optional report files (``report.json``, ``confusion.png``, ``curves.png``) written by training.

Loading checks that the features it will be fed match: same backbones (in order) as the caller
expects, each known to the registry with the recorded dimension; otherwise it refuses with an
``ArtifactMismatchError`` that says what differs and how to fix it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import platform
import shutil
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata as package_metadata
from pathlib import Path
from typing import Any

import numpy as np

from mlcore.data.domain import RAW_TO_FILTERED
from mlcore.evaluation.metrics import ICDR_LABELS, REFERABLE_FROM
from mlcore.evaluation.reports import _jsonable
from mlcore.features.config import FeatureConfig
from mlcore.models.classifier import HeadClassifier

FORMAT_VERSION = 1
HEAD_FILE = "head.keras"
SCALER_FILE = "scaler.npz"
METADATA_FILE = "metadata.json"

# Image domains a model can be trained on. The shared APTOS set is already Ben-Graham filtered
# ("gaussian_filtered"); a model trained on it sees raw photographs only after the same filter.
DOMAIN_FILTERED = "gaussian_filtered"
DOMAIN_RAW = "raw"
DOMAINS = (DOMAIN_FILTERED, DOMAIN_RAW)

_LIBRARIES = {
    "numpy": ("numpy",),
    "tensorflow": ("tensorflow-cpu", "tensorflow"),
    "keras": ("keras",),
    "scikit-learn": ("scikit-learn",),
    "h5py": ("h5py",),
    "pillow": ("pillow",),
}


class ArtifactError(ValueError):
    """The folder is not a usable model artifact (missing or corrupt file)."""


class ArtifactMismatchError(ArtifactError):
    """The artifact expects other features than the caller would give it."""


def library_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name, distributions in _LIBRARIES.items():
        versions[name] = None
        for distribution in distributions:
            with contextlib.suppress(package_metadata.PackageNotFoundError):
                versions[name] = package_metadata.version(distribution)
                break
    return versions


@dataclass
class ModelArtifact:
    """A loaded model: the fitted head, the feature configuration it needs, and its metadata."""

    path: Path
    # HeadClassifier, or mlcore.models.finetune.FinetunedModel for a fine-tuned network ("kind":
    # "finetuned" in the metadata), which takes images rather than features.
    classifier: HeadClassifier
    feature_config: FeatureConfig
    metadata: dict[str, Any]

    @property
    def classes(self) -> list[int]:
        return [int(c) for c in self.classifier.classes_]

    @property
    def class_labels(self) -> dict[int, str]:
        return {int(k): v for k, v in self.metadata["class_labels"].items()}

    @property
    def training_domain(self) -> str:
        return self.metadata["training_domain"]

    @property
    def raw_photo_preprocessing(self) -> str | None:
        """Preprocessing that maps a raw photograph into the training domain (None: as trained)."""
        return self.metadata.get("raw_photo_preprocessing")

    @property
    def tta_augment(self) -> tuple[Any, int] | None:
        """(AugmentConfig, seed) when predictions average over augmented copies, else None."""
        from mlcore.data.augment import AugmentConfig

        settings = dict(self.metadata.get("augmentation") or {})
        if not settings.pop("tta", False) or not settings.get("variants"):
            return None
        seed = int(settings.pop("seed", self.metadata["seed"]))
        return AugmentConfig(**settings), seed

    @property
    def is_finetuned(self) -> bool:
        return self.metadata.get("kind") == "finetuned"

    @property
    def referable_from(self) -> int:
        return int(self.metadata.get("referable_from", REFERABLE_FROM))

    @property
    def feature_dims(self) -> dict[str, int]:
        return {k: int(v) for k, v in self.metadata["feature_dims"].items()}


def output_story(
    *, decoding: str, thresholds: Sequence[float] | np.ndarray | None, temperature: float
) -> dict[str, Any]:
    """What a displayed prediction means, for the pages: the probabilities are calibrated by
    ``temperature``; the grade is their argmax, or (``"ordinal"``) the number of ``thresholds``
    below the expected grade position ``sum_k k * p_k`` (show that value beside the grade)."""
    return {
        "probabilities": "calibrated (temperature scaling)"
        if temperature != 1.0
        else "uncalibrated softmax",
        "temperature": float(temperature),
        "decoding": decoding,
        "thresholds": None if thresholds is None else [float(t) for t in thresholds],
        "grade_rule": "argmax of the probabilities"
        if decoding != "ordinal"
        else "thresholds on the expected grade position (sum of position x probability)",
    }


def _feature_dims(backbones: Sequence[str]) -> dict[str, int]:
    from mlcore.features.backbones import get_backbone

    return {name: get_backbone(name).feature_dim for name in backbones}


def save_artifact(
    out_dir: str | Path,
    classifier: HeadClassifier,
    *,
    feature_config: FeatureConfig,
    training_counts: Mapping[int, int],
    training_domain: str = DOMAIN_FILTERED,
    raw_photo_preprocessing: str | None = RAW_TO_FILTERED,
    class_labels: Mapping[int, str] | None = None,
    referable_from: int = REFERABLE_FROM,
    metrics: Mapping[str, Any] | None = None,
    augmentation: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write the artifact folder (replacing an existing one only once the new one is complete).

    ``training_counts``: source images per grade the head was trained on (augmented copies not
    counted). ``augmentation``: the ``AugmentConfig`` fields plus ``tta`` (predictions average
    over that many augmented copies too) and ``seed``. ``training_domain``: ``"gaussian_filtered"`` when the training images were already
    Ben-Graham filtered (then ``raw_photo_preprocessing`` names the preprocessing that brings a
    raw photograph into that domain) or ``"raw"``.
    """
    if not hasattr(classifier, "model_"):
        raise ArtifactError("cannot save an unfitted classifier")
    if training_domain not in DOMAINS:
        raise ValueError(f"training_domain must be one of {DOMAINS}, got {training_domain!r}")
    dims = _feature_dims(feature_config.backbones)
    if sum(dims.values()) != classifier.n_features_in_:
        raise ArtifactMismatchError(
            f"the head takes {classifier.n_features_in_} features but backbones "
            f"{list(feature_config.backbones)} give {sum(dims.values())}"
        )
    classes = [int(c) for c in classifier.classes_]
    labels = class_labels or {g: ICDR_LABELS.get(g, f"grade {g}") for g in classes}
    params = classifier.get_params()
    params["classes"] = classes
    meta: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "backbones": list(feature_config.backbones),
        "preprocessing": feature_config.preprocessing,
        "feature_dtype": feature_config.dtype,
        "feature_dims": dims,
        "n_features": int(classifier.n_features_in_),
        "training_domain": training_domain,
        "raw_photo_preprocessing": raw_photo_preprocessing
        if training_domain == DOMAIN_FILTERED
        else None,
        "classes": classes,
        "class_labels": {str(g): labels.get(g, f"grade {g}") for g in classes},
        "referable_from": int(referable_from),
        "training_counts": {str(g): int(training_counts.get(g, 0)) for g in classes},
        "n_training_images": int(sum(training_counts.values())),
        "seed": int(classifier.seed),
        "head": {
            "params": params,
            "decoding": classifier.decoding_,
            "thresholds": None
            if classifier.thresholds_ is None
            else [float(t) for t in classifier.thresholds_],
            "validation_qwk": classifier.validation_qwk_,
            "temperature": float(getattr(classifier, "temperature_", 1.0)),
            "calibration": getattr(classifier, "calibration_", None),
            "n_epochs": classifier.n_epochs_,
            "best_epoch": classifier.best_epoch_,
            "fit_seconds": classifier.fit_seconds_,
            "history": classifier.history_,
        },
        "outputs": output_story(
            decoding=classifier.decoding_,
            thresholds=classifier.thresholds_,
            temperature=float(getattr(classifier, "temperature_", 1.0)),
        ),
        "augmentation": dict(augmentation) if augmentation else None,
        "library_versions": library_versions(),
        "metrics": dict(metrics or {}),
    }
    if extra:
        meta["extra"] = dict(extra)

    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = out_dir.with_name(f".{out_dir.name}.{uuid.uuid4().hex}.tmp")
    staging.mkdir()
    try:
        classifier.model_.save(staging / HEAD_FILE)
        np.savez(
            staging / SCALER_FILE, mean=classifier.scaler_mean_, scale=classifier.scaler_scale_
        )
        (staging / METADATA_FILE).write_text(json.dumps(_jsonable(meta), indent=2) + "\n")
        if out_dir.exists():
            # Keep report files written beside a previous model out of the new one.
            retired = out_dir.with_name(f".{out_dir.name}.{uuid.uuid4().hex}.old")
            out_dir.rename(retired)
            staging.rename(out_dir)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            staging.rename(out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir


def update_metadata(artifact_dir: str | Path, **fields: Any) -> None:
    """Merge top-level fields (e.g. ``metrics``) into an artifact's metadata.json."""
    path = Path(artifact_dir) / METADATA_FILE
    meta = json.loads(path.read_text())
    meta.update(_jsonable(fields))
    temp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    temp.write_text(json.dumps(meta, indent=2) + "\n")
    temp.replace(path)


def read_metadata(artifact_dir: str | Path) -> dict[str, Any]:
    """metadata.json only (no TensorFlow): what the web app shows about a model."""
    path = Path(artifact_dir) / METADATA_FILE
    if not path.is_file():
        raise ArtifactError(f"{artifact_dir} is not a model folder: no {METADATA_FILE}")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ArtifactError(f"{path} is not valid JSON: {error}") from error
    if meta.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(
            f"{path} has format_version {meta.get('format_version')!r}; this code reads "
            f"{FORMAT_VERSION}"
        )
    return meta


def check_backbones(meta: Mapping[str, Any], expected: Sequence[str] | None) -> None:
    """Refuse an artifact whose features the caller cannot (or would not) provide."""
    from mlcore.features.backbones import available_backbones, get_backbone

    recorded = list(meta["backbones"])
    if expected is not None and list(expected) != recorded:
        raise ArtifactMismatchError(
            f"model was trained on features of backbones {recorded} but backbones "
            f"{list(expected)} are configured; set FUNDUS_BACKBONES={','.join(recorded)} "
            f"(same order) or train a new model"
        )
    for name in recorded:
        try:
            spec = get_backbone(name)
        except LookupError:
            raise ArtifactMismatchError(
                f"model needs backbone {name!r}, which is not registered here "
                f"(known: {', '.join(available_backbones())})"
            ) from None
        dim = int(meta["feature_dims"][name])
        if spec.feature_dim != dim:
            raise ArtifactMismatchError(
                f"model expects {dim} features from backbone {name!r} but it gives "
                f"{spec.feature_dim} here"
            )


def load_artifact(
    artifact_dir: str | Path,
    *,
    backbones: Sequence[str] | None = None,
    preprocessing: str | None = None,
) -> ModelArtifact:
    """Load a model folder. ``backbones``/``preprocessing``: what the caller's features are
    configured with (e.g. ``FeatureConfig.from_env()``); a difference raises
    ``ArtifactMismatchError``. None accepts the artifact's own configuration."""
    import keras

    artifact_dir = Path(artifact_dir)
    meta = read_metadata(artifact_dir)
    check_backbones(meta, backbones)
    if preprocessing is not None and preprocessing != meta["preprocessing"]:
        raise ArtifactMismatchError(
            f"model was trained on features with preprocessing {meta['preprocessing']!r} but "
            f"{preprocessing!r} is configured"
        )
    if meta.get("kind") == "finetuned":
        from mlcore.models.finetune import load_finetuned

        return ModelArtifact(
            path=artifact_dir,
            classifier=load_finetuned(artifact_dir, meta),  # type: ignore[arg-type]
            feature_config=FeatureConfig(
                backbones=tuple(meta["backbones"]), preprocessing=meta["preprocessing"]
            ),
            metadata=meta,
        )
    for name in (HEAD_FILE, SCALER_FILE):
        if not (artifact_dir / name).is_file():
            raise ArtifactError(f"{artifact_dir} is not a complete model folder: no {name}")
    params = dict(meta["head"]["params"])
    params["classes"] = tuple(params["classes"])
    classifier = HeadClassifier(**params)
    model = keras.saving.load_model(artifact_dir / HEAD_FILE, compile=False)
    with np.load(artifact_dir / SCALER_FILE) as scaler:
        mean, scale = scaler["mean"].astype(np.float32), scaler["scale"].astype(np.float32)
    n_features = int(meta["n_features"])
    input_dim = int(model.input_shape[-1])
    if not (mean.shape == scale.shape == (n_features,) and input_dim == n_features):
        raise ArtifactError(
            f"{artifact_dir}: head takes {input_dim} features, scaler has {mean.shape[0]}, "
            f"metadata says {n_features}"
        )
    if n_features != sum(int(d) for d in meta["feature_dims"].values()):
        raise ArtifactMismatchError(f"{artifact_dir}: feature dimensions do not add up")
    classifier.classes_ = np.asarray(meta["classes"], dtype=np.int64)
    classifier.n_features_in_ = n_features
    classifier.scaler_mean_ = mean
    classifier.scaler_scale_ = scale
    classifier.model_ = model
    classifier.decoding_ = meta["head"]["decoding"]
    thresholds = meta["head"]["thresholds"]
    classifier.thresholds_ = None if thresholds is None else np.asarray(thresholds, np.float64)
    classifier.validation_qwk_ = meta["head"].get("validation_qwk")
    # Artifacts written before calibration existed have no temperature: 1 leaves them as trained.
    classifier.temperature_ = float(meta["head"].get("temperature") or 1.0)
    classifier.calibration_ = meta["head"].get("calibration")
    classifier.history_ = meta["head"].get("history", {})
    classifier.n_epochs_ = meta["head"].get("n_epochs")
    classifier.best_epoch_ = meta["head"].get("best_epoch")
    classifier.fit_seconds_ = meta["head"].get("fit_seconds")
    classifier.class_counts_ = np.asarray(
        [meta["training_counts"][str(g)] for g in meta["classes"]], dtype=np.int64
    )
    feature_config = FeatureConfig(
        backbones=tuple(meta["backbones"]),
        preprocessing=meta["preprocessing"],
        dtype=meta.get("feature_dtype", "float32"),
    )
    return ModelArtifact(
        path=artifact_dir, classifier=classifier, feature_config=feature_config, metadata=meta
    )
