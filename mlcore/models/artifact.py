"""Model artifact: a folder holding everything needed to grade new images, for both kinds of
model. This module owns the on-disk format: it alone writes and reads it.

- ``metadata.json``: backbones and preprocessing (and the training images' domain), class labels,
  feature dimensions, training images per grade, seed, head parameters and decoding (ordinal
  thresholds), library versions and evaluation metrics;
- a head on frozen features (:class:`~mlcore.models.classifier.HeadClassifier`): ``head.keras``
  (the Dropout -> Dense(softmax) head) and ``scaler.npz`` (the feature standardisation,
  ``mean`` and ``scale``, fitted on the training split);
- a fine-tuned network (:class:`~mlcore.models.finetuned.FinetunedModel`, ``"kind": "finetuned"``
  in the metadata): ``network.keras``, the whole network, which takes images (its training
  record comes from :func:`mlcore.models.finetune.save_finetuned_artifact`);
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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata as package_metadata
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from mlcore.data.augment import AugmentConfig
from mlcore.data.domain import DOMAIN_FILTERED, DOMAINS, RAW_TO_FILTERED
from mlcore.data.splits import DEFAULT_SEED
from mlcore.evaluation.metrics import ICDR_LABELS, REFERABLE_FROM
from mlcore.evaluation.reports import _jsonable
from mlcore.features.config import FeatureConfig
from mlcore.models.calibration import Decoding, output_story
from mlcore.models.classifier import HeadClassifier
from mlcore.models.finetuned import NO_FLIPS, FinetunedModel

FORMAT_VERSION = 1
HEAD_FILE = "head.keras"
SCALER_FILE = "scaler.npz"
NETWORK_FILE = "network.keras"
METADATA_FILE = "metadata.json"

# The metadata's "kind" of a fine-tuned network; a head on frozen features records no kind.
KIND_FINETUNED = "finetuned"

# Image domains a model can be trained on. The shared APTOS set is already Ben-Graham filtered
# ("gaussian_filtered"); a model trained on it sees raw photographs only after the same filter.

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


class GradingModel(Protocol):
    """Either kind of model, as grading code and this format see it: calibrated probabilities of
    its inputs (features for a head, images for a fine-tuned network), grades read off them, and
    the calibration and decoding the metadata records."""

    classes_: npt.NDArray[np.int64]
    decoding_: str
    thresholds_: npt.NDArray[np.float64] | None
    validation_qwk_: dict[str, float] | None
    seed: int

    def predict_proba(self, inputs: npt.NDArray[Any]) -> npt.NDArray[np.float64]: ...

    def decode(self, proba: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]: ...


def library_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name, distributions in _LIBRARIES.items():
        versions[name] = None
        for distribution in distributions:
            with contextlib.suppress(package_metadata.PackageNotFoundError):
                versions[name] = package_metadata.version(distribution)
                break
    return versions


def is_finetuned(meta: Mapping[str, Any]) -> bool:
    return meta.get("kind") == KIND_FINETUNED


@dataclass
class ModelArtifact:
    """A loaded model: the fitted model, the feature configuration it needs, and its metadata."""

    path: Path
    # A fine-tuned network takes images rather than features.
    classifier: HeadClassifier | FinetunedModel
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
        return str(self.metadata["training_domain"])

    @property
    def raw_photo_preprocessing(self) -> str | None:
        """Preprocessing that maps a raw photograph into the training domain (None: as trained)."""
        method = self.metadata.get("raw_photo_preprocessing")
        return None if method is None else str(method)

    @property
    def tta_augment(self) -> tuple[AugmentConfig, int] | None:
        """(AugmentConfig, seed) when predictions average over augmented copies, else None."""
        settings = dict(self.metadata.get("augmentation") or {})
        if not settings.pop("tta", False) or not settings.get("variants"):
            return None
        seed = int(settings.pop("seed", self.metadata["seed"]))
        return AugmentConfig(**settings), seed

    @property
    def is_finetuned(self) -> bool:
        return is_finetuned(self.metadata)

    @property
    def referable_from(self) -> int:
        return int(self.metadata.get("referable_from", REFERABLE_FROM))

    @property
    def feature_dims(self) -> dict[str, int]:
        return {k: int(v) for k, v in self.metadata["feature_dims"].items()}


def _feature_dims(backbones: Sequence[str]) -> dict[str, int]:
    from mlcore.features.backbones import get_backbone

    return {name: get_backbone(name).feature_dim for name in backbones}


# -- writing ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Inputs:
    """What a model reads: features of ``backbones`` (``n_features`` in all) or, for a fine-tuned
    network, images preprocessed as its single backbone expects."""

    backbones: tuple[str, ...]
    preprocessing: str
    feature_dtype: str
    n_features: int


@dataclass(frozen=True)
class TrainingRecord:
    """What every model records about its training: the images per grade, their domain, the
    grades' names, the referable split and its evaluation."""

    training_counts: Mapping[int, int]
    training_domain: str
    raw_photo_preprocessing: str | None
    referable_from: int
    class_labels: Mapping[int, str] | None = None
    metrics: Mapping[str, Any] | None = None
    augmentation: Mapping[str, Any] | None = None
    extra: Mapping[str, Any] | None = None


def _metadata(
    model: GradingModel,
    *,
    kind: str | None,
    inputs: _Inputs,
    training: TrainingRecord,
    head: Mapping[str, Any],
    sections: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """metadata.json of either kind of model. ``head``: the kind's own head fields (parameters,
    calibration record, epochs, history) beside the decoding every model records;
    ``sections``: further kind-specific top-level entries."""
    classes = [int(c) for c in model.classes_]
    labels = training.class_labels or {g: ICDR_LABELS.get(g, f"grade {g}") for g in classes}
    temperature = float(getattr(model, "temperature_", 1.0))
    counts = training.training_counts
    meta: dict[str, Any] = {"format_version": FORMAT_VERSION}
    if kind is not None:
        meta["kind"] = kind
    meta |= {
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "backbones": list(inputs.backbones),
        "preprocessing": inputs.preprocessing,
        "feature_dtype": inputs.feature_dtype,
        "feature_dims": _feature_dims(inputs.backbones),
        "n_features": int(inputs.n_features),
        "training_domain": training.training_domain,
        "raw_photo_preprocessing": training.raw_photo_preprocessing
        if training.training_domain == DOMAIN_FILTERED
        else None,
        "classes": classes,
        "class_labels": {str(g): labels.get(g, f"grade {g}") for g in classes},
        "referable_from": int(training.referable_from),
        "training_counts": {str(g): int(counts.get(g, 0)) for g in classes},
        "n_training_images": int(sum(counts.values())),
        "seed": int(model.seed),
        "head": {
            "params": head["params"],
            "decoding": model.decoding_,
            "thresholds": None
            if model.thresholds_ is None
            else [float(t) for t in model.thresholds_],
            "validation_qwk": model.validation_qwk_,
            "temperature": temperature,
            **{key: value for key, value in head.items() if key != "params"},
        },
        "outputs": output_story(
            decoding=model.decoding_, thresholds=model.thresholds_, temperature=temperature
        ),
        **dict(sections or {}),
        "augmentation": dict(training.augmentation) if training.augmentation else None,
        "library_versions": library_versions(),
        "metrics": dict(training.metrics or {}),
    }
    if training.extra:
        meta["extra"] = dict(training.extra)
    return meta


def _write_folder(
    out_dir: str | Path, meta: Mapping[str, Any], write_model: Callable[[Path], None]
) -> Path:
    """Write the model files (``write_model(folder)``) and ``metadata.json`` into a staging
    folder, then put it in place of ``out_dir``: an existing model is replaced only once the new
    one is complete."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = out_dir.with_name(f".{out_dir.name}.{uuid.uuid4().hex}.tmp")
    staging.mkdir()
    try:
        write_model(staging)
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
    """Write the model folder of a head (replacing an existing one only once the new one is
    complete).

    ``training_counts``: source images per grade the head was trained on (augmented copies not
    counted). ``augmentation``: the ``AugmentConfig`` fields plus ``tta`` (predictions average
    over that many augmented copies too) and ``seed``. ``training_domain``:
    ``"gaussian_filtered"`` when the training images were already Ben-Graham filtered (then
    ``raw_photo_preprocessing`` names the preprocessing that brings a raw photograph into that
    domain) or ``"raw"``.
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
    params = classifier.get_params()
    params["classes"] = [int(c) for c in classifier.classes_]
    meta = _metadata(
        classifier,
        kind=None,
        inputs=_Inputs(
            backbones=tuple(feature_config.backbones),
            preprocessing=feature_config.preprocessing,
            feature_dtype=feature_config.dtype,
            n_features=int(classifier.n_features_in_),
        ),
        training=TrainingRecord(
            training_counts=training_counts,
            training_domain=training_domain,
            raw_photo_preprocessing=raw_photo_preprocessing,
            referable_from=referable_from,
            class_labels=class_labels,
            metrics=metrics,
            augmentation=augmentation,
            extra=extra,
        ),
        head={
            "params": params,
            "calibration": getattr(classifier, "calibration_", None),
            "n_epochs": classifier.n_epochs_,
            "best_epoch": classifier.best_epoch_,
            "fit_seconds": classifier.fit_seconds_,
            "history": classifier.history_,
        },
    )

    def write_head(folder: Path) -> None:
        classifier.model_.save(folder / HEAD_FILE)
        np.savez(folder / SCALER_FILE, mean=classifier.scaler_mean_, scale=classifier.scaler_scale_)

    return _write_folder(out_dir, meta, write_head)


def save_finetuned_model(
    out_dir: str | Path,
    model: FinetunedModel,
    *,
    preprocessing: str,
    training: TrainingRecord,
    fit_record: Mapping[str, Any],
    finetune: Mapping[str, Any],
) -> Path:
    """Write the model folder of a fine-tuned network: the whole network (``network.keras``)
    and the same metadata as a head's, with ``kind: "finetuned"``. ``fit_record``: the head
    fields of its training (calibration, epochs, best epoch, seconds, history); ``finetune``: the
    metadata's ``finetune`` section (configuration, learning-rate search)."""
    meta = _metadata(
        model,
        kind=KIND_FINETUNED,
        inputs=_Inputs(
            backbones=(model.backbone,),
            preprocessing=preprocessing,
            feature_dtype="float32",
            n_features=_feature_dims([model.backbone])[model.backbone],
        ),
        training=training,
        head={"params": {"classes": [int(c) for c in model.classes_]}, **fit_record},
        sections={"finetune": dict(finetune)},
    )
    return _write_folder(out_dir, meta, lambda folder: model.network_.save(folder / NETWORK_FILE))


# -- reading ------------------------------------------------------------------------------------
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
        meta: dict[str, Any] = json.loads(path.read_text())
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
    artifact_dir = Path(artifact_dir)
    meta = read_metadata(artifact_dir)
    check_backbones(meta, backbones)
    if preprocessing is not None and preprocessing != meta["preprocessing"]:
        raise ArtifactMismatchError(
            f"model was trained on features with preprocessing {meta['preprocessing']!r} but "
            f"{preprocessing!r} is configured"
        )
    if is_finetuned(meta):
        return ModelArtifact(
            path=artifact_dir,
            classifier=load_finetuned(artifact_dir, meta),
            feature_config=FeatureConfig(
                backbones=tuple(meta["backbones"]), preprocessing=meta["preprocessing"]
            ),
            metadata=meta,
        )
    feature_config = FeatureConfig(
        backbones=tuple(meta["backbones"]),
        preprocessing=meta["preprocessing"],
        dtype=meta.get("feature_dtype", "float32"),
    )
    return ModelArtifact(
        path=artifact_dir,
        classifier=_load_head(artifact_dir, meta),
        feature_config=feature_config,
        metadata=meta,
    )


def _load_head(artifact_dir: Path, meta: Mapping[str, Any]) -> HeadClassifier:
    """The fitted head of a model folder, its learned attributes as recorded."""
    import keras

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
    head = meta["head"]
    classifier.classes_ = np.asarray(meta["classes"], dtype=np.int64)
    classifier.n_features_in_ = n_features
    classifier.scaler_mean_ = mean
    classifier.scaler_scale_ = scale
    classifier.model_ = model
    classifier.decoding_ = head["decoding"]
    thresholds = head["thresholds"]
    classifier.thresholds_ = None if thresholds is None else np.asarray(thresholds, np.float64)
    classifier.validation_qwk_ = head.get("validation_qwk")
    # Artifacts written before calibration existed have no temperature: 1 leaves them as trained.
    classifier.temperature_ = float(head.get("temperature") or 1.0)
    classifier.calibration_ = head.get("calibration")
    classifier.history_ = head.get("history", {})
    classifier.n_epochs_ = head.get("n_epochs")
    classifier.best_epoch_ = head.get("best_epoch")
    classifier.fit_seconds_ = head.get("fit_seconds")
    classifier.class_counts_ = np.asarray(
        [meta["training_counts"][str(g)] for g in meta["classes"]], dtype=np.int64
    )
    return classifier


def load_finetuned(artifact_dir: str | Path, meta: Mapping[str, Any]) -> FinetunedModel:
    """The fine-tuned network of a model folder with its recorded calibration and decoding."""
    import keras

    path = Path(artifact_dir) / NETWORK_FILE
    if not path.is_file():
        raise ArtifactError(f"{artifact_dir} is not a complete model folder: no {NETWORK_FILE}")
    network = keras.saving.load_model(path, compile=False)
    head, finetune = meta["head"], meta.get("finetune") or {}
    thresholds = head.get("thresholds")
    return FinetunedModel(
        network=network,
        backbone=meta["backbones"][0],
        classes=meta["classes"],
        temperature=float(head.get("temperature") or 1.0),
        decoding=Decoding(
            head["decoding"],
            None if thresholds is None else np.asarray(thresholds, np.float64),
            head.get("validation_qwk"),
        ),
        seed=int(meta.get("seed", DEFAULT_SEED)),
        info={"cut_layer": finetune.get("cut_layer")},
        # Folders written before flip averaging predict on the image as it is, as validated.
        flips=(finetune.get("config") or {}).get("test_flips") or NO_FLIPS,
    )
