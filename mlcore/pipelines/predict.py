"""Grade image files with a model folder: features from the store (computed if missing), then
probabilities per grade.

Training domain: the shared APTOS set is already Ben-Graham ("Gaussian") filtered at 224 px, so a
model trained on it records preprocessing "none" and ``training_domain="gaussian_filtered"``. A
raw camera photograph given to such a model is detected (``looks_gaussian_filtered`` is false) and
run through ``raw_photo_preprocessing`` (:func:`mlcore.data.domain.filter_like_training`: crop,
stretch, the training set's narrow Gaussian high-pass) so that it reaches the model in the
domain it was trained on. Its features live in the store of that preprocessing, keyed by the
same file sha256, so nothing collides. A filtered image given to a model trained on raw
photographs is refused (filtering twice gives a different picture).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from mlcore.data.domain import RAW_TO_FILTERED, preprocess_for
from mlcore.data.preprocessing import load_rgb, looks_gaussian_filtered
from mlcore.evaluation.metrics import referable_probability
from mlcore.features.config import FeatureConfig, default_store_dir, default_weights_dir
from mlcore.models.artifact import DOMAIN_FILTERED, ModelArtifact, load_artifact

# Decoding a 4288 x 2848 JPEG at reduced scale is enough to tell a raw photo from a filtered one.
_DOMAIN_CHECK_SIZE = 256


class DomainMismatchError(ValueError):
    """An image cannot be brought into the domain the model was trained on."""


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


def preprocessing_for(artifact: ModelArtifact, image: np.ndarray, *, name: str = "image") -> str:
    """The preprocessing that brings ``image`` into ``artifact``'s training domain."""
    return _preprocessing_for_domain(artifact, looks_gaussian_filtered(image), name)


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


def _features_outside_pipeline(
    items: Sequence[Any],
    *,
    config: FeatureConfig,
    method: str,
    store_dir: Path,
    weights_dir: Path | None,
    weights: str | Path | None,
    variants: Sequence[int] = (0,),
    transform: Callable[[Any, Any], Any] | None = None,
) -> np.ndarray:
    """Features (n, len(variants), d) of images preprocessed by ``method``, which the extraction
    pipeline does not know (:data:`~mlcore.data.domain.RAW_TO_FILTERED`), cached in the store under
    that name. ``config`` gives the backbones, dtype and batch size."""
    from mlcore.features.backbones import get_backbone
    from mlcore.features.extraction import compute_features
    from mlcore.features.store import FeatureStore, feature_key, parse_feature_key, store_path

    shas = [parse_feature_key(item.key)[0] for item in items]
    keys = [feature_key(sha, v) for sha in shas for v in variants]
    blocks = []
    for name in config.backbones:
        spec = get_backbone(name)
        path = store_path(store_dir, name, method)
        with FeatureStore(
            path,
            backbone=name,
            preprocessing=method,
            feature_dim=spec.feature_dim,
            dtype=config.dtype,
        ) as store:
            missing = set(store.missing(keys))
            arrays, todo = [], []
            for item, sha in zip(items, shas, strict=True):
                wanted = [v for v in variants if feature_key(sha, v) in missing]
                if not wanted:
                    continue
                image = preprocess_for(
                    load_rgb(item.path, min_size=math.ceil(spec.input_size * 1.5)),
                    method,
                    spec.input_size,
                )
                for v in wanted:
                    key = feature_key(sha, v)
                    if v and transform is not None:
                        arrays.append(transform(image.astype(np.float32), key).numpy())
                    else:
                        arrays.append(image)
                    todo.append(key)
            if arrays:
                single = replace(config, backbones=(name,), preprocessing="none")
                store.put(
                    todo,
                    compute_features(
                        arrays, config=single, weights_dir=weights_dir, weights=weights
                    ),
                )
            blocks.append(store.get(keys).reshape(len(items), len(variants), -1))
    return np.concatenate(blocks, axis=2)


@dataclass(frozen=True)
class DomainSpec:
    """What decides how an image reaches a model: its features, the domain it was trained in and
    the mapping of raw photographs into it. A loaded :class:`ModelArtifact` has the same
    attributes, so training (before any artifact exists) and prediction share one code path."""

    feature_config: FeatureConfig
    training_domain: str
    raw_photo_preprocessing: str | None
    tta_augment: tuple[Any, int] | None = None


# One line per file content ("<sha256>\t<1 if Gaussian filtered else 0>") in the feature store:
# telling a raw photo from a filtered one decodes the image (about 7 ms), and the answer never
# changes for the same bytes, so retraining on cached features does not pay it again.
DOMAIN_CACHE_FILE = "image-domains.tsv"


def images_look_filtered(
    paths: Sequence[Path], keys: Sequence[str], *, store_dir: Path
) -> list[bool]:
    """Whether each image looks already Gaussian filtered, cached by content in ``store_dir``."""
    from mlcore.features.store import parse_feature_key

    cache_path = Path(store_dir) / DOMAIN_CACHE_FILE
    known: dict[str, bool] = {}
    if cache_path.is_file():
        for line in cache_path.read_text().splitlines():
            sha, _, flag = line.partition("\t")
            if flag in ("0", "1"):
                known[sha] = flag == "1"
    shas = [parse_feature_key(key)[0] for key in keys]
    new_lines = []
    for path, sha in zip(paths, shas, strict=True):
        if sha not in known:
            known[sha] = looks_gaussian_filtered(load_rgb(path, min_size=_DOMAIN_CHECK_SIZE))
            new_lines.append(f"{sha}\t{int(known[sha])}\n")
    if new_lines:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        # Appends of whole lines: two processes writing at once only repeat an answer.
        with cache_path.open("a") as file:
            file.write("".join(new_lines))
    return [known[sha] for sha in shas]


def _preprocessing_for_domain(spec: Any, filtered: bool, name: str) -> str:
    trained_with = spec.feature_config.preprocessing
    if spec.training_domain == DOMAIN_FILTERED:
        if filtered:
            return trained_with
        if spec.raw_photo_preprocessing is None:
            raise DomainMismatchError(
                f"{name} looks like a raw photograph but the model was trained on "
                f"Gaussian-filtered images and records no preprocessing to filter it"
            )
        return spec.raw_photo_preprocessing
    if filtered:
        raise DomainMismatchError(
            f"{name} looks already Gaussian (Ben Graham) filtered, but the model was trained on "
            f"raw photographs (preprocessing {trained_with!r}); upload the original photograph"
        )
    return trained_with


def domain_features(
    spec: DomainSpec | ModelArtifact,
    paths: Sequence[str | Path],
    *,
    n_features: int | None = None,
    store_dir: str | Path | None = None,
    weights_dir: str | Path | None = None,
    weights: str | Path | None = "imagenet",
    progress: Callable[[int, int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray | None, list[str], list[str], list[bool]]:
    """(features, features of augmented copies (n, v, d) when ``spec.tta_augment``, keys,
    preprocessing per image, raw-photo flag per image), in ``paths`` order: each image brought
    into ``spec``'s training domain first (raw photographs through
    ``spec.raw_photo_preprocessing``). Training and prediction both call this."""
    from mlcore.data.augment import make_augment_transform
    from mlcore.features.backbones import get_backbone
    from mlcore.features.extraction import extract_features, image_items, load_features
    from mlcore.pipelines.training import augment_store_dir, variant_features

    store = Path(store_dir) if store_dir is not None else default_store_dir()
    weights_folder = Path(weights_dir) if weights_dir is not None else default_weights_dir()
    paths = [Path(p) for p in paths]
    items = image_items(paths)
    filtered = images_look_filtered(paths, [item.key for item in items], store_dir=store)
    methods = [
        _preprocessing_for_domain(spec, flag, str(path))
        for path, flag in zip(paths, filtered, strict=True)
    ]
    if n_features is None:
        n_features = sum(get_backbone(name).feature_dim for name in spec.feature_config.backbones)
    features = np.zeros((len(paths), n_features), np.float32)
    tta = spec.tta_augment
    variants = None if tta is None else np.zeros((len(paths), tta[0].variants, n_features))
    for method in sorted(set(methods)):
        rows = [i for i, m in enumerate(methods) if m == method]
        subset = [items[i] for i in rows]
        common = {"weights_dir": weights_folder, "weights": weights}
        if method == RAW_TO_FILTERED:
            outside = {"config": spec.feature_config, "method": method, **common}
            features[rows] = _features_outside_pipeline(subset, store_dir=store, **outside)[:, 0]
            if tta is not None:
                augment, seed = tta
                variants[rows] = _features_outside_pipeline(
                    subset,
                    store_dir=augment_store_dir(store, augment, seed),
                    variants=range(1, augment.variants + 1),
                    transform=make_augment_transform(augment, seed),
                    **outside,
                )
            continue
        config = replace(spec.feature_config, preprocessing=method)
        extract_features(subset, config=config, store_dir=store, progress=progress, **common)
        keys = [item.key for item in subset]
        features[rows] = load_features(keys, config=config, store_dir=store)
        if tta is not None:
            augment, seed = tta
            variants[rows] = variant_features(
                [item.path for item in subset],
                keys,
                n_variants=augment.variants,
                augment=augment,
                seed=seed,
                feature_config=config,
                store_dir=store,
                **common,
            )
    trained_with = spec.feature_config.preprocessing
    raw = [m != trained_with for m in methods]
    return features, variants, [item.key for item in items], methods, raw


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
        n_features=artifact.classifier.n_features_in_,
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
    if artifact.is_finetuned:
        return _predict_finetuned(artifact, paths, progress=progress)
    features, variants, keys, methods, raw = predict_features(
        artifact,
        paths,
        store_dir=store_dir,
        weights_dir=weights_dir,
        weights=weights,
        progress=progress,
    )
    from mlcore.pipelines.training import predict_with_tta

    classifier = artifact.classifier
    proba = predict_with_tta(classifier, features, variants)
    grades = classifier.decode(proba)
    referable = _referable_column(artifact, proba)
    return [
        Prediction(
            path=Path(path),
            grade=int(grades[i]),
            grades=artifact.classes,
            probabilities=[float(p) for p in proba[i]],
            referable_probability=None if referable[i] is None else float(referable[i]),
            key=keys[i],
            preprocessing=methods[i],
            raw_photo=raw[i],
        )
        for i, path in enumerate(paths)
    ]


def _predict_finetuned(
    artifact: ModelArtifact,
    paths: Sequence[str | Path],
    *,
    progress: Callable[[int, int], None] | None = None,
    chunk: int = 128,
) -> list[Prediction]:
    """Grade images with a fine-tuned network: the whole network runs on each image (no
    feature store), in chunks so that memory stays flat on large sets."""
    from mlcore.features.extraction import image_items
    from mlcore.models.finetune import load_images

    model = artifact.classifier
    paths = [Path(p) for p in paths]
    methods = [
        preprocessing_for(artifact, load_rgb(p, min_size=_DOMAIN_CHECK_SIZE), name=str(p))
        for p in paths
    ]
    keys = [item.key for item in image_items(paths)]
    blocks = []
    for start in range(0, len(paths), chunk):
        images = load_images(
            paths[start : start + chunk],
            size=model.input_size,
            preprocessing=methods[start : start + chunk],
        )
        blocks.append(model.predict_proba(images))
        if progress is not None:
            progress(min(len(paths), start + chunk), len(paths))
    proba = np.concatenate(blocks)
    grades = model.decode(proba)
    referable = _referable_column(artifact, proba)
    trained_with = artifact.feature_config.preprocessing
    return [
        Prediction(
            path=path,
            grade=int(grades[i]),
            grades=artifact.classes,
            probabilities=[float(p) for p in proba[i]],
            referable_probability=None if referable[i] is None else float(referable[i]),
            key=keys[i],
            preprocessing=methods[i],
            raw_photo=methods[i] != trained_with,
        )
        for i, path in enumerate(paths)
    ]


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
    from mlcore.pipelines.training import predict_with_tta

    artifact = _as_artifact(model)
    config = artifact.feature_config
    empty = ([], np.zeros((0, len(artifact.classes))), np.zeros(0, dtype=int))
    if not keys or artifact.tta_augment is not None or artifact.is_finetuned:
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
    proba = predict_with_tta(artifact.classifier, features, None)
    return rows, proba, np.asarray(artifact.classifier.decode(proba))


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
                image = load_rgb(Path(image_path), min_size=_DOMAIN_CHECK_SIZE)
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
