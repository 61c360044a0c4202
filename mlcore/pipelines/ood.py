"""Out-of-distribution scores of photographs for a model folder (:mod:`mlcore.models.ood`), from
the same features its head reads: the store's, or those :mod:`mlcore.pipelines.predict` extracts
(and stores) on the way. A score above 1 means the photograph lies outside the training domain.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from mlcore.models.artifact import ModelArtifact
from mlcore.models.classifier import HeadClassifier
from mlcore.models.ood import FeatureDistance, ood_load
from mlcore.pipelines.predict import predict_features


def _scorer(artifact: ModelArtifact) -> FeatureDistance | None:
    if not isinstance(artifact.classifier, HeadClassifier):
        return None  # a fine-tuned network reads images: no frozen features to measure
    return ood_load(artifact.path)


def ood_scores_stored(
    artifact: ModelArtifact, keys: Sequence[str], *, store_dir: str | Path
) -> list[float | None]:
    """Scores of images whose features are in the store under the model's preprocessing (the
    images ``predict_from_store`` predicted); None each when the model has no distance."""
    from mlcore.features.extraction import load_features

    scorer = _scorer(artifact)
    if scorer is None or not keys:
        return [None] * len(keys)
    features = load_features(list(keys), config=artifact.feature_config, store_dir=store_dir)
    return [float(s) for s in scorer.score(features)]


def ood_scores_images(
    artifact: ModelArtifact,
    paths: Sequence[str | Path],
    *,
    store_dir: str | Path | None = None,
    weights_dir: str | Path | None = None,
    weights: str | Path | None = "imagenet",
) -> list[float | None]:
    """Scores of image files, through the model's domain mapping (raw photographs filtered as
    for prediction); features come from the store when prediction has put them there."""
    scorer = _scorer(artifact)
    if scorer is None or not paths:
        return [None] * len(paths)
    features, *_ = predict_features(
        artifact, paths, store_dir=store_dir, weights_dir=weights_dir, weights=weights
    )
    return [float(s) for s in scorer.score(features)]
