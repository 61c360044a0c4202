"""Grade image files with a model folder: features from the store (computed if missing), then
probabilities per grade. Each image is first brought into the model's training domain
(:mod:`mlcore.pipelines.domain_features`, which training shares); a fine-tuned network reads the
images themselves.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from mlcore.data.preprocessing import load_rgb
from mlcore.evaluation.metrics import referable_probability
from mlcore.models.artifact import ModelArtifact, load_artifact
from mlcore.models.classifier import HeadClassifier, predict_with_tta
from mlcore.models.finetune import FinetunedModel
from mlcore.pipelines.domain_features import (
    DOMAIN_CHECK_SIZE,
    DomainMismatchError,
    DomainSpec,
    domain_features,
    image_domain,
    preprocessing_for,
)

# Callers (the web app, the CLI) import these from here, where prediction raises and uses them.
__all__ = [
    "DOMAIN_CHECKS_FILE",
    "DomainMismatchError",
    "DomainSpec",
    "Prediction",
    "domain_features",
    "expand_image_paths",
    "predict_features",
    "predict_from_store",
    "predict_images",
    "preprocessing_for",
]


@dataclass
class Prediction:
    """One graded image. ``probabilities`` in scale order (``grades``); ``preprocessing``: what
    was applied to reach the model's training domain; ``raw_photo``: the image was a raw
    photograph that had to be filtered."""

    path: Path
    grade: int
    grades: list[int]
    probabilities: list[float]
    referable_probability: float | None  # None when the scale has no referable split
    key: str
    preprocessing: str
    raw_photo: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "grade": self.grade,
            "probabilities": {
                str(g): p for g, p in zip(self.grades, self.probabilities, strict=True)
            },
            "referable_probability": self.referable_probability,
            "preprocessing": self.preprocessing,
            "raw_photo": self.raw_photo,
        }


def expand_image_paths(sources: Sequence[str | Path]) -> list[Path]:
    """Files as given, folders searched recursively for images (sorted)."""
    from mlcore.features.extraction import find_images

    paths: list[Path] = []
    for source in map(Path, sources):
        if source.is_dir():
            found = find_images(source)
            if not found:
                raise FileNotFoundError(f"no images found in folder {source}")
            paths.extend(found)
        elif source.is_file():
            paths.append(source)
        else:
            raise FileNotFoundError(f"no such image or folder: {source}")
    return paths


def _as_artifact(model: ModelArtifact | str | Path) -> ModelArtifact:
    return model if isinstance(model, ModelArtifact) else load_artifact(model)


def _referable_column(artifact: ModelArtifact, proba: np.ndarray) -> list[float | None]:
    """P(referable) per image, or None per image when the scale has no referable split."""
    splits_scale = any(g >= artifact.referable_from for g in artifact.classes) and any(
        g < artifact.referable_from for g in artifact.classes
    )
    if not splits_scale:
        return [None] * len(proba)
    return list(
        referable_probability(
            proba, classes=artifact.classes, referable_from=artifact.referable_from
        )
    )


def _predictions(
    artifact: ModelArtifact,
    paths: Sequence[str | Path],
    proba: npt.NDArray[np.float64],
    grades: npt.NDArray[np.int64],
    keys: Sequence[str],
    methods: Sequence[str],
) -> list[Prediction]:
    referable = _referable_column(artifact, proba)
    trained_with = artifact.feature_config.preprocessing
    predictions = []
    for i, path in enumerate(paths):
        referable_i = referable[i]
        predictions.append(
            Prediction(
                path=Path(path),
                grade=int(grades[i]),
                grades=artifact.classes,
                probabilities=[float(p) for p in proba[i]],
                referable_probability=None if referable_i is None else float(referable_i),
                key=keys[i],
                preprocessing=methods[i],
                raw_photo=methods[i] != trained_with,
            )
        )
    return predictions


def _head(artifact: ModelArtifact) -> HeadClassifier:
    """The artifact's head on frozen features (a fine-tuned network reads images instead)."""
    if not isinstance(artifact.classifier, HeadClassifier):
        raise TypeError(f"{artifact.path} holds a fine-tuned network, which reads images")
    return artifact.classifier


def predict_features(
    artifact: ModelArtifact,
    paths: Sequence[str | Path],
    *,
    store_dir: str | Path | None = None,
    weights_dir: str | Path | None = None,
    weights: str | Path | None = "imagenet",
    progress: Callable[[int, int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray | None, list[str], list[str], list[bool]]:
    """:func:`domain_features` of ``paths`` for ``artifact``."""
    return domain_features(
        artifact,
        paths,
        n_features=_head(artifact).n_features_in_,
        store_dir=store_dir,
        weights_dir=weights_dir,
        weights=weights,
        progress=progress,
    )


def predict_images(
    model: ModelArtifact | str | Path,
    paths: Sequence[str | Path],
    *,
    store_dir: str | Path | None = None,
    weights_dir: str | Path | None = None,
    weights: str | Path | None = "imagenet",
    progress: Callable[[int, int], None] | None = None,
) -> list[Prediction]:
    """Grade image files (not folders: see :func:`expand_image_paths`) with a model folder or a
    loaded :class:`~mlcore.models.artifact.ModelArtifact`. ``weights=None`` (random backbone weights)
    is for tests only."""
    artifact = _as_artifact(model)
    if not paths:
        return []
    if isinstance(artifact.classifier, FinetunedModel):
        return _predict_finetuned(artifact, artifact.classifier, paths, progress=progress)
    features, variants, keys, methods, _ = predict_features(
        artifact,
        paths,
        store_dir=store_dir,
        weights_dir=weights_dir,
        weights=weights,
        progress=progress,
    )
    classifier = _head(artifact)
    proba = predict_with_tta(classifier, features, variants)
    return _predictions(artifact, paths, proba, classifier.decode(proba), keys, methods)


def _predict_finetuned(
    artifact: ModelArtifact,
    model: FinetunedModel,
    paths: Sequence[str | Path],
    *,
    progress: Callable[[int, int], None] | None = None,
    chunk: int = 128,
) -> list[Prediction]:
    """Grade images with a fine-tuned network: the whole network runs on each image (no
    feature store), in chunks so that memory stays flat on large sets."""
    from mlcore.features.extraction import image_items

    image_paths = [Path(p) for p in paths]
    domain = image_domain(artifact)
    methods = [domain.method_for(p) for p in image_paths]
    keys = [item.key for item in image_items(image_paths)]
    blocks = []
    for start in range(0, len(image_paths), chunk):
        rows = slice(start, start + chunk)
        images, _ = domain.load(image_paths[rows], size=model.input_size, methods=methods[rows])
        blocks.append(model.predict_proba(images))
        if progress is not None:
            progress(min(len(image_paths), start + chunk), len(image_paths))
    proba = np.concatenate(blocks)
    return _predictions(artifact, image_paths, proba, model.decode(proba), keys, methods)


def predict_from_store(
    model: ModelArtifact | str | Path,
    keys: Sequence[str],
    *,
    paths: Sequence[str | Path],
    store_dir: str | Path,
) -> tuple[list[int], np.ndarray, np.ndarray]:
    """Predict, in one batch, the images whose features the model needs are already in the store.

    Each image is still checked for its domain (a small decode, as :func:`predict_images` does), and
    only those the model reads with its training preprocessing are taken, so the result is exactly
    what :func:`predict_images` gives them; nothing is hashed or extracted.

    Returns (positions in ``keys`` that were predicted, probabilities (n, classes), grades). Images
    whose features are missing, that need another preprocessing, that cannot be read (or every
    image, for a model that averages over augmented copies) are left to :func:`predict_images`.
    """
    from mlcore.features.backbones import get_backbone
    from mlcore.features.extraction import load_features
    from mlcore.features.store import FeatureStore, store_path

    artifact = _as_artifact(model)
    config = artifact.feature_config
    classifier = artifact.classifier
    empty: tuple[list[int], npt.NDArray[np.float64], npt.NDArray[np.int64]] = (
        [],
        np.zeros((0, len(artifact.classes))),
        np.zeros(0, dtype=np.int64),
    )
    if not keys or artifact.tta_augment is not None or not isinstance(classifier, HeadClassifier):
        return empty  # a fine-tuned network reads images, not stored features
    present = set(keys)
    for name in config.backbones:
        path = store_path(Path(store_dir), name, config.preprocessing)
        if not path.exists():
            return empty
        store = FeatureStore(
            path,
            backbone=name,
            preprocessing=config.preprocessing,
            feature_dim=get_backbone(name).feature_dim,
            dtype=config.dtype,
            mode="r",
        )
        present -= set(store.missing(list(present)))
    eligible = [i for i, key in enumerate(keys) if key in present]
    methods = _methods_cached(
        artifact, [keys[i] for i in eligible], [paths[i] for i in eligible], Path(store_dir)
    )
    rows = [
        i for i, method in zip(eligible, methods, strict=True) if method == config.preprocessing
    ]
    if not rows:
        return empty
    features = load_features([keys[i] for i in rows], config=config, store_dir=store_dir)
    proba = predict_with_tta(classifier, features, None)
    return rows, proba, np.asarray(classifier.decode(proba))


# Which preprocessing brings an image into a model's domain is a pure function of the image and of
# the model's training domain; the check decodes the photograph and scans its pixels (~10 ms), which
# for a retrain's thousands of images costs more than the rest of the prediction. Kept beside the
# features, like them keyed by content.
DOMAIN_CHECKS_FILE = "domain_checks.json"


def _methods_cached(
    artifact: ModelArtifact, keys: Sequence[str], paths: Sequence[str | Path], store_dir: Path
) -> list[str | None]:
    """``preprocessing_for`` of each image (``None``: unreadable or outside the model's domain;
    the pipeline reports those), remembered in ``store_dir/DOMAIN_CHECKS_FILE``."""
    import json
    import os

    domain = (
        f"{artifact.training_domain}|{artifact.feature_config.preprocessing}|"
        f"{artifact.raw_photo_preprocessing}"
    )
    cache_file = store_dir / DOMAIN_CHECKS_FILE
    try:
        known: dict[str, str] = json.loads(cache_file.read_text()) if cache_file.is_file() else {}
    except (OSError, ValueError):
        known = {}
    methods: list[str | None] = []
    changed = False
    for key, image_path in zip(keys, paths, strict=True):
        cache_key = f"{key}|{domain}"
        if cache_key not in known:
            try:
                image = load_rgb(Path(image_path), min_size=DOMAIN_CHECK_SIZE)
                known[cache_key] = preprocessing_for(artifact, image, name=str(image_path))
            except (DomainMismatchError, OSError, ValueError):
                methods.append(None)  # not remembered: the file may be replaced or fixed
                continue
            changed = True
        methods.append(known[cache_key])
    if changed:
        store_dir.mkdir(parents=True, exist_ok=True)
        partial = cache_file.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text(json.dumps(known))
        partial.replace(cache_file)
    return methods
