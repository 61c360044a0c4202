"""Backbone features of the stored photographs, in the feature store (worker side).

Features are a pure function of an image's bytes and the feature configuration, keyed by the
image's sha256 (``mlcore.features.store.feature_key``), so extraction is incremental: only images missing
from the store are computed, and a killed extraction resumes where it stopped. Augmented copies
(``images_augment``) are stored under the source's key plus ``#v<k>`` in the store folder of their
augmentation setting (``mlcore.pipelines.training.augment_store_dir``); originals are untouched.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from django.conf import settings

from grading import storage
from grading.models import Image, Job
from grading.selectors.model_versions import model_version_active
from grading.services import ml_config
from grading.services.feature_shards import (
    feature_chunk_claim,
    feature_chunk_extract,
    feature_chunk_finish,
    feature_chunks_summary,
    features_distribute,
)
from grading.services.jobs import JOB_CONTINUES, JobHeartbeat, Progress
from grading.services.training_set import training_images

if TYPE_CHECKING:
    from mlcore.features.config import FeatureConfig
    from mlcore.features.extraction import ExtractionResult, ImageItem

DEFAULT_AUGMENT_VARIANTS = 4


def feature_config_current() -> FeatureConfig:
    """The active version's feature configuration, else the configured one
    (``grading.services.ml_config.feature_config``)."""
    version = model_version_active()
    if version is not None and version.backbones:
        return ml_config.feature_config(
            backbones=version.backbones, preprocessing=version.preprocessing
        )
    return ml_config.feature_config()


def feature_key(sha256: str, variant: int = 0) -> str:
    from mlcore.features.store import feature_key as key

    return key(sha256, variant)


def image_items(images: Sequence[Image]) -> list[ImageItem]:
    from mlcore.features.extraction import ImageItem

    return [ImageItem(path=image.media_path, key=feature_key(image.sha256)) for image in images]


def features_extract(
    *, images: Sequence[Image], config: FeatureConfig, progress: Progress
) -> ExtractionResult:
    """Features of ``images`` missing from the store; ``progress`` gets 0-100 over the images
    to compute."""
    from mlcore.features.extraction import extract_features

    def report(done: int, total: int) -> None:
        percent = 100 if total == 0 else 100 * done // total
        progress(percent, f"Features: {done} of {total} images computed")

    return extract_features(
        image_items(images),
        config=config,
        store_dir=ml_config.feature_store_dir(),
        weights_dir=ml_config.weights_dir(),
        progress=report,
    )


def features_extract_job(*, job: Job, progress: Progress) -> dict[str, Any]:
    """The `features_extract` task: every stored image lacking features for the current
    backbone set. With remote storage, the extraction is shared by every ML worker in chunks
    (``feature_shards``) and ``features_extract_continue_job`` reports once they have run."""
    config = feature_config_current()
    image_ids = list(Image.objects.order_by("id").values_list("id", flat=True))
    chunks = features_distribute(
        job=job,
        config=config,
        image_ids=image_ids,
        then="grading.tasks.features_extract_continue",
        progress=progress,
    )
    if chunks:
        return {JOB_CONTINUES: True, "chunks": chunks}
    if storage.storage_is_remote():
        # Every image's features are published already: nothing to extract here.
        return features_extract_continue_job(job=job, progress=progress)
    images = list(Image.objects.order_by("id"))
    result = features_extract(images=images, config=config, progress=progress)
    computed = max(result.computed.values(), default=0)
    return {
        "images": result.total,
        "computed": result.computed,
        "reused": result.reused,
        "seconds": round(result.seconds, 1),
        "message": f"{computed} image(s) computed, {result.total - computed} already stored "
        f"({', '.join(config.backbones)})",
    }


def features_extract_continue_job(*, job: Job, progress: Progress) -> dict[str, Any]:
    """After the chunks of a distributed extraction: what they did."""
    summary = feature_chunks_summary(job_id=job.pk)
    progress(100, f"Features: {summary['chunks_done']} of {summary['chunks']} chunks extracted")
    return {
        **summary,
        "images": Image.objects.count(),
        "message": f"{summary['computed']} image(s) computed in {summary['chunks']} chunk(s) "
        f"by {len(summary['chunks_by_worker'])} worker(s)",
    }


def features_chunk_run(*, job_id: int, chunk_id: int, worker: str) -> dict[str, Any]:
    """The `features_chunk` task: one chunk of a running job's extraction, with the job's
    heartbeat while it runs."""
    chunk = feature_chunk_claim(job_id=job_id, chunk_id=chunk_id, worker=worker)
    if chunk is None:
        return {"skipped": True}
    with JobHeartbeat(job_id):
        computed = feature_chunk_extract(chunk=chunk)
    done, total = feature_chunk_finish(chunk=chunk, computed=computed)
    return {"chunk": chunk.index, "computed": computed, "done": done, "total": total}


def images_augment_job(*, job: Job, progress: Progress) -> dict[str, Any]:
    """The `images_augment` task: the recipe's augmentation of the confirmed training images,
    ``params["variants"]`` copies each (default ``FUNDUS_AUGMENT_VARIANTS``, else 4). Only the
    copies' features are stored, in the store folder of this augmentation setting, where a
    retrain with the same number of copies finds them; the originals are untouched."""
    from mlcore.pipelines.training import variant_features

    default = settings.FUNDUS_AUGMENT_VARIANTS or DEFAULT_AUGMENT_VARIANTS
    variants = int(job.params.get("variants", default))
    if not 1 <= variants <= 50:
        raise ValueError(f"variants must be between 1 and 50, not {variants}")
    images = training_images()
    classes, referable_from = ml_config.scale_classes()
    training = ml_config.training_config_from_settings(
        classes=classes, referable_from=referable_from
    )
    config = ml_config.feature_config()

    def report(done: int, total: int) -> None:
        percent = 100 if total == 0 else 100 * done // total
        progress(percent, f"Augmented copies: {done} of {total} computed")

    started = time.perf_counter()
    # Remote storage: the photographs into this worker's cache. (The augmented copies' features
    # stay in this worker's local store: they are not published as shards.)
    storage.media_localize(
        image.path.relative_to(settings.MEDIA_ROOT).as_posix() for image in images
    )
    variant_features(
        [image.path for image in images],
        [feature_key(image.sha256) for image in images],
        n_variants=variants,
        augment=training.augment,
        seed=training.seed,
        feature_config=config,
        store_dir=ml_config.feature_store_dir(),
        weights_dir=ml_config.weights_dir(),
        progress=report,
    )
    return {
        "images": len(images),
        "variants": variants,
        "seconds": round(time.perf_counter() - started, 1),
        "message": f"{variants} augmented copies of {len(images)} training image(s) stored",
    }
