"""Features of images brought into a model's training domain: what training and prediction share.

Training domain: the shared APTOS set is already Ben-Graham ("Gaussian") filtered at 224 px, so a
model trained on it records preprocessing "none" and ``training_domain="gaussian_filtered"``. A
raw camera photograph given to such a model is detected (``looks_gaussian_filtered`` is false) and
run through ``raw_photo_preprocessing`` (:func:`mlcore.data.domain.filter_like_training`: crop,
stretch, the training set's narrow Gaussian high-pass) so that it reaches the model in the
domain it was trained on. Its features live in the store of that preprocessing, keyed by the
same file sha256, so nothing collides. A filtered image given to a model trained on raw
photographs is refused (filtering twice gives a different picture).

Augmented copies of an image (``variant_features``) live in a store folder of their own per
augmentation setting (:func:`augment_store_dir`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from mlcore.data.augment import AugmentConfig, make_augment_transform
from mlcore.data.domain import (
    DOMAIN_CHECK_SIZE,
    RAW_TO_FILTERED,
    DomainMismatchError,
    ImageDomain,
    preprocess_for,
)
from mlcore.data.preprocessing import load_rgb, looks_gaussian_filtered
from mlcore.features.config import FeatureConfig, default_store_dir, default_weights_dir
from mlcore.features.extraction import ImageItem

Features = npt.NDArray[np.float32]
# Augmented copies' features (n, copies, d), float64 as averaged into the predictions.
Copies = npt.NDArray[np.float64]

# Re-exported: the web app and the CLI catch the error and size the check from here.
__all__ = ["DOMAIN_CHECK_SIZE", "DomainMismatchError", "image_domain"]


class TrainingDomain(Protocol):
    """What decides how an image reaches a model: its features, the domain it was trained in and
    the mapping of raw photographs into it (a :class:`DomainSpec` before training, a loaded
    :class:`~mlcore.models.artifact.ModelArtifact` after)."""

    @property
    def feature_config(self) -> FeatureConfig: ...

    @property
    def training_domain(self) -> str: ...

    @property
    def raw_photo_preprocessing(self) -> str | None: ...

    @property
    def tta_augment(self) -> tuple[AugmentConfig, int] | None: ...


@dataclass(frozen=True)
class DomainSpec:
    """A :class:`TrainingDomain` before any artifact exists: a loaded
    :class:`~mlcore.models.artifact.ModelArtifact` has the same attributes, so training and
    prediction share one code path."""

    feature_config: FeatureConfig
    training_domain: str
    raw_photo_preprocessing: str | None
    tta_augment: tuple[AugmentConfig, int] | None = None


def preprocessing_for(
    artifact: TrainingDomain, image: npt.NDArray[np.uint8], *, name: str = "image"
) -> str:
    """The preprocessing that brings ``image`` into ``artifact``'s training domain."""
    return _preprocessing_for_domain(artifact, looks_gaussian_filtered(image), name)


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
            known[sha] = looks_gaussian_filtered(load_rgb(path, min_size=DOMAIN_CHECK_SIZE))
            new_lines.append(f"{sha}\t{int(known[sha])}\n")
    if new_lines:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        # Appends of whole lines: two processes writing at once only repeat an answer.
        with cache_path.open("a") as file:
            file.write("".join(new_lines))
    return [known[sha] for sha in shas]


def image_domain(spec: TrainingDomain) -> ImageDomain:
    """How images reach ``spec``'s model (one definition for training and prediction)."""
    return ImageDomain(
        training_domain=spec.training_domain,
        preprocessing=spec.feature_config.preprocessing,
        raw_photo_preprocessing=spec.raw_photo_preprocessing,
    )


def _preprocessing_for_domain(spec: TrainingDomain, filtered: bool, name: str) -> str:
    return image_domain(spec).method_for_filtered(filtered, name)


def domain_features(
    spec: TrainingDomain,
    paths: Sequence[str | Path],
    *,
    n_features: int | None = None,
    store_dir: str | Path | None = None,
    weights_dir: str | Path | None = None,
    weights: str | Path | None = "imagenet",
    progress: Callable[[int, int], None] | None = None,
) -> tuple[Features, Copies | None, list[str], list[str], list[bool]]:
    """(features, features of augmented copies (n, v, d) when ``spec.tta_augment``, keys,
    preprocessing per image, raw-photo flag per image), in ``paths`` order: each image brought
    into ``spec``'s training domain first (raw photographs through
    ``spec.raw_photo_preprocessing``). Training and prediction both call this."""
    from mlcore.features.backbones import get_backbone
    from mlcore.features.extraction import image_items

    store = Path(store_dir) if store_dir is not None else default_store_dir()
    weights_folder = Path(weights_dir) if weights_dir is not None else default_weights_dir()
    image_paths = [Path(p) for p in paths]
    items = image_items(image_paths)
    filtered = images_look_filtered(image_paths, [item.key for item in items], store_dir=store)
    methods = [
        _preprocessing_for_domain(spec, flag, str(path))
        for path, flag in zip(image_paths, filtered, strict=True)
    ]
    if n_features is None:
        n_features = sum(get_backbone(name).feature_dim for name in spec.feature_config.backbones)
    features = np.zeros((len(image_paths), n_features), np.float32)
    tta = spec.tta_augment
    variants = None if tta is None else np.zeros((len(image_paths), tta[0].variants, n_features))
    for method in sorted(set(methods)):
        rows = [i for i, m in enumerate(methods) if m == method]
        sources = _MethodSources(
            items=[items[i] for i in rows],
            method=method,
            store_dir=store,
            weights_dir=weights_folder,
            weights=weights,
        )
        if method == RAW_TO_FILTERED:
            features[rows], copies = _features_by_hand(spec, sources)
        else:
            features[rows], copies = _features_by_pipeline(spec, sources, progress)
        if variants is not None and copies is not None:
            variants[rows] = copies
    trained_with = spec.feature_config.preprocessing
    raw = [m != trained_with for m in methods]
    return features, variants, [item.key for item in items], methods, raw


@dataclass(frozen=True)
class _MethodSources:
    """The images that reach a model through one preprocessing, and where their features live."""

    items: list[ImageItem]
    method: str
    store_dir: Path
    weights_dir: Path | None
    weights: str | Path | None


def _features_by_hand(
    spec: TrainingDomain, sources: _MethodSources
) -> tuple[Features, Features | None]:
    """Features (and augmented copies' with ``spec.tta_augment``) of a preprocessing the
    extraction pipeline does not know."""
    outside = functools.partial(
        _features_outside_pipeline,
        sources.items,
        config=spec.feature_config,
        method=sources.method,
        weights_dir=sources.weights_dir,
        weights=sources.weights,
    )
    features = outside(store_dir=sources.store_dir)[:, 0]
    if spec.tta_augment is None:
        return features, None
    augment, seed = spec.tta_augment
    copies = outside(
        store_dir=augment_store_dir(sources.store_dir, augment, seed),
        variants=range(1, augment.variants + 1),
        transform=make_augment_transform(augment, seed),
    )
    return features, copies


def _features_by_pipeline(
    spec: TrainingDomain,
    sources: _MethodSources,
    progress: Callable[[int, int], None] | None,
) -> tuple[Features, Features | None]:
    """Features (and augmented copies' with ``spec.tta_augment``) through the extraction
    pipeline, which computes only what the store lacks."""
    from mlcore.features.extraction import extract_features, load_features

    config = replace(spec.feature_config, preprocessing=sources.method)
    extract_features(
        sources.items,
        config=config,
        store_dir=sources.store_dir,
        progress=progress,
        weights_dir=sources.weights_dir,
        weights=sources.weights,
    )
    keys = [item.key for item in sources.items]
    features = load_features(keys, config=config, store_dir=sources.store_dir)
    if spec.tta_augment is None:
        return features, None
    augment, seed = spec.tta_augment
    copies = variant_features(
        [item.path for item in sources.items],
        keys,
        n_variants=augment.variants,
        augment=augment,
        seed=seed,
        feature_config=config,
        store_dir=sources.store_dir,
        weights_dir=sources.weights_dir,
        weights=sources.weights,
    )
    return features, copies


def augment_store_dir(store_dir: str | Path, augment: AugmentConfig, seed: int) -> Path:
    """Store folder of augmented variants: one per augmentation setting and seed.

    Variant keys (``<sha>#v<k>``) do not say how the copy was made, so variants of different
    settings live in different folders: changing a range can never reuse stale features.
    """
    settings = {k: v for k, v in asdict(augment).items() if k != "variants"}
    digest = hashlib.sha256(json.dumps([settings, seed], sort_keys=True).encode()).hexdigest()
    return Path(store_dir) / f"augment-{digest[:12]}"


def source_features(
    paths: Sequence[Path],
    *,
    feature_config: FeatureConfig,
    store_dir: Path,
    weights_dir: Path | None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[list[str], np.ndarray]:
    """(feature keys, features) of the original images, extracting what the store lacks."""
    from mlcore.features.extraction import extract_features, image_items, load_features

    items = image_items(paths)
    extract_features(
        items,
        config=feature_config,
        store_dir=store_dir,
        weights_dir=weights_dir,
        progress=progress,
    )
    keys = [item.key for item in items]
    return keys, load_features(keys, config=feature_config, store_dir=store_dir)


def variant_features(
    paths: Sequence[Path],
    keys: Sequence[str],
    *,
    n_variants: int,
    augment: AugmentConfig,
    seed: int,
    feature_config: FeatureConfig,
    store_dir: Path,
    weights_dir: Path | None,
    weights: str | Path | None = "imagenet",
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Features of augmented copies 1..n_variants of each image: (n_images, n_variants, dim)."""
    from mlcore.features.extraction import ImageItem, extract_features, load_features
    from mlcore.features.store import feature_key, parse_feature_key

    shas = [parse_feature_key(k)[0] for k in keys]
    items = [
        ImageItem(path, feature_key(sha, v))
        for v in range(1, n_variants + 1)
        for path, sha in zip(paths, shas, strict=True)
    ]
    folder = augment_store_dir(store_dir, augment, seed)
    extract_features(
        items,
        config=feature_config,
        store_dir=folder,
        weights_dir=weights_dir,
        transform=make_augment_transform(augment, seed),
        weights=weights,
        progress=progress,
    )
    features = load_features([i.key for i in items], config=feature_config, store_dir=folder)
    return features.reshape(n_variants, len(paths), -1).transpose(1, 0, 2)
