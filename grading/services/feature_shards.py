"""Distributed feature extraction over the object storage (``FUNDUS_STORAGE=s3``).

A job that needs features (a retrain, an extraction) splits the images whose features the
manifest lacks into chunks (``FeatureChunk``), one Celery task each on the `ml` queue, so that
every ML worker takes a share. A chunk's task downloads its photographs, extracts their features
into a private temporary store, writes one HDF5 shard per backbone (``mlcore.features.shards``),
uploads it under a fresh random name and only then records its rows in the manifest
(``FeatureShardRow``): one writer per shard, no shared HDF5 file, and an INSERT that skips keys
already present, so a chunk redelivered after its worker died never duplicates a row.

Before training or predicting, a worker *gathers* what it needs from the manifest into its local
``FUNDUS_FEATURE_STORE`` (a cache it may lose), and mlcore reads that as before.
"""

from __future__ import annotations

import logging
import tempfile
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from grading import storage
from grading.models import FeatureChunk, FeatureShardRow, Image, Job
from grading.services import ml_config
from grading.services.jobs import Progress, job_hand_off

if TYPE_CHECKING:
    from mlcore.features.config import FeatureConfig

logger = logging.getLogger(__name__)

FEATURES_PREFIX = "features"
# Manifest lookups go to the database this many keys at a time (bounded IN lists).
_QUERY_KEYS = 1000
# Progress of a chunked job: extraction fills 1-60 %, the step after the chunks the rest.
CHUNKS_PROGRESS_END = 60


def config_keys(config: FeatureConfig) -> dict[str, str]:
    """backbone -> the manifest's configuration key of its features under ``config``."""
    from mlcore.features.shards import shard_config_key

    return {
        backbone: shard_config_key(backbone, config.preprocessing, config.dtype)
        for backbone in config.backbones
    }


def _key(sha256: str) -> str:
    from mlcore.features.store import feature_key

    return feature_key(sha256)


def _batches(items: Sequence[str], size: int = _QUERY_KEYS) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def manifest_keys(*, config_key: str, keys: Sequence[str]) -> set[str]:
    """Which of ``keys`` the manifest holds for ``config_key``."""
    found: set[str] = set()
    for batch in _batches(list(keys)):
        found.update(
            FeatureShardRow.objects.filter(config_key=config_key, key__in=batch).values_list(
                "key", flat=True
            )
        )
    return found


def images_missing_features(*, config: FeatureConfig, image_ids: Sequence[int]) -> list[int]:
    """Ids (in order) of the images whose features of some backbone the manifest lacks."""
    rows = list(Image.objects.filter(pk__in=image_ids).order_by("id").values_list("id", "sha256"))
    keys = [_key(sha) for _, sha in rows]
    present = [manifest_keys(config_key=ck, keys=keys) for ck in config_keys(config).values()]
    return [
        image_id
        for (image_id, _), key in zip(rows, keys, strict=True)
        if not all(key in found for found in present)
    ]


def feature_chunks_create(
    *, job: Job, config: FeatureConfig, image_ids: Sequence[int]
) -> list[FeatureChunk]:
    """Split ``image_ids`` into the job's chunks of ``FUNDUS_FEATURE_CHUNK_IMAGES``."""
    size = settings.FUNDUS_FEATURE_CHUNK_IMAGES
    recorded = {
        "backbones": list(config.backbones),
        "preprocessing": config.preprocessing,
        "dtype": config.dtype,
        "batch_size": config.batch_size,
    }
    with transaction.atomic():
        FeatureChunk.objects.filter(job=job).delete()
        return FeatureChunk.objects.bulk_create(
            FeatureChunk(
                job=job,
                index=index,
                image_ids=list(image_ids[start : start + size]),
                feature_config=recorded,
            )
            for index, start in enumerate(range(0, len(image_ids), size))
        )


def feature_chunk_config(chunk: FeatureChunk) -> FeatureConfig:
    from mlcore.features.config import FeatureConfig

    recorded = chunk.feature_config
    return FeatureConfig(
        backbones=tuple(recorded["backbones"]),
        preprocessing=recorded["preprocessing"],
        dtype=recorded["dtype"],
        batch_size=int(recorded["batch_size"]),
    )


def features_distribute(
    *, job: Job, config: FeatureConfig, image_ids: Sequence[int], then: str, progress: Progress
) -> int:
    """With remote storage: split the extraction of the images whose features the manifest
    lacks into chunks for every ML worker, with ``then`` (a task name) after the last; returns
    the number of chunks (0: nothing to extract, or local storage: the caller goes on)."""
    if not storage.storage_is_remote():
        return 0
    missing = images_missing_features(config=config, image_ids=image_ids)
    if not missing:
        return 0
    with transaction.atomic():
        chunks = feature_chunks_create(job=job, config=config, image_ids=missing)
        # Handed off in the same commit that sends the chunks: the step after them may run
        # on any worker, even before this task has returned.
        job_hand_off(job_id=job.pk)
        feature_chunks_dispatch(job=job, chunks=chunks, then=then)
    progress(
        1,
        f"Features: 0 of {len(chunks)} chunks extracted ({len(missing)} images, "
        "shared by every ML worker)",
    )
    return len(chunks)


def feature_chunks_dispatch(*, job: Job, chunks: Sequence[FeatureChunk], then: str) -> None:
    """Queue one task per chunk on the `ml` queue and, once all have run, ``then`` (a task
    name, called with the job's id) — a Celery chord, sent when the transaction commits. The
    tasks are named, not imported: the tasks module imports the services."""
    from celery import chord

    from grading.celery import ML_QUEUE, app

    header = [
        app.signature("grading.tasks.features_chunk", args=(job.pk, chunk.pk), queue=ML_QUEUE)
        for chunk in chunks
    ]
    body = app.signature(then, args=(job.pk,), immutable=True, queue=ML_QUEUE)
    transaction.on_commit(lambda: chord(header)(body))


def feature_chunk_claim(*, job_id: int, chunk_id: int, worker: str) -> FeatureChunk | None:
    """Take a chunk of a running job; None when it is done already or its job is no longer
    running. A chunk marked running is taken again: its message only comes back to a worker
    when the one that had it died (or the broker's visibility timeout passed)."""
    if not Job.objects.filter(pk=job_id, state=Job.State.RUNNING).exists():
        return None
    claimed = FeatureChunk.objects.filter(
        pk=chunk_id,
        job_id=job_id,
        state__in=(FeatureChunk.State.PENDING, FeatureChunk.State.RUNNING),
    ).update(
        state=FeatureChunk.State.RUNNING,
        worker=worker[:255],
        attempts=F("attempts") + 1,
        started_at=timezone.now(),
    )
    return FeatureChunk.objects.get(pk=chunk_id) if claimed else None


def feature_chunk_extract(*, chunk: FeatureChunk) -> int:
    """Extract the chunk's features that the manifest still lacks, publish them as shards and
    record them; returns how many images were computed."""
    from mlcore.features.backbones import get_backbone
    from mlcore.features.extraction import ImageItem, extract_features
    from mlcore.features.shards import write_shard
    from mlcore.features.store import FeatureStore, store_path

    config = feature_chunk_config(chunk)
    wanted = images_missing_features(config=config, image_ids=chunk.image_ids)
    images = list(Image.objects.filter(pk__in=wanted).order_by("id"))
    if not images:
        return 0
    paths = storage.media_localize(image.file.name for image in images)
    keys = [_key(image.sha256) for image in images]
    items = [ImageItem(path=path, key=key) for path, key in zip(paths, keys, strict=True)]
    with tempfile.TemporaryDirectory(prefix="chunk-", dir=_scratch_dir()) as scratch:
        extract_features(
            items, config=config, store_dir=scratch, weights_dir=ml_config.weights_dir()
        )
        for backbone, config_key in config_keys(config).items():
            spec = get_backbone(backbone)
            with FeatureStore(
                store_path(scratch, backbone, config.preprocessing),
                backbone=backbone,
                preprocessing=config.preprocessing,
                feature_dim=spec.feature_dim,
                dtype=config.dtype,
                mode="r",
            ) as store:
                features = store.get(keys)
            shard = f"{FEATURES_PREFIX}/{config_key}/{uuid.uuid4().hex}.h5"
            local = write_shard(
                Path(scratch) / "shard.h5",
                keys,
                features,
                backbone=backbone,
                preprocessing=config.preprocessing,
                dtype=config.dtype,
            )
            # Uploaded before the manifest names it: a row never points at a missing shard.
            storage.object_upload(path=local, name=shard)
            FeatureShardRow.objects.bulk_create(
                [
                    FeatureShardRow(config_key=config_key, key=key, shard=shard, row=row)
                    for row, key in enumerate(keys)
                ],
                ignore_conflicts=True,
            )
            local.unlink()
    return len(images)


def _scratch_dir() -> Path:
    folder = Path(settings.FUNDUS_FEATURE_STORE) / "scratch"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def feature_chunk_finish(*, chunk: FeatureChunk, computed: int) -> tuple[int, int]:
    """Mark the chunk done and move its job's bar; returns (chunks done, chunks in all)."""
    FeatureChunk.objects.filter(pk=chunk.pk).update(
        state=FeatureChunk.State.DONE, computed=computed, finished_at=timezone.now()
    )
    done, total = feature_chunks_count(job_id=chunk.job_id)
    percent = 1 + (CHUNKS_PROGRESS_END - 1) * done // max(total, 1)
    # Several workers finish chunks at once: the bar only moves forwards.
    Job.objects.filter(pk=chunk.job_id, state=Job.State.RUNNING, progress__lte=percent).update(
        progress=percent,
        message=f"Features: {done} of {total} chunks extracted (last by {chunk.worker})"[:500],
        heartbeat_at=timezone.now(),
    )
    return done, total


def feature_chunks_count(*, job_id: int) -> tuple[int, int]:
    chunks = FeatureChunk.objects.filter(job_id=job_id)
    return chunks.filter(state=FeatureChunk.State.DONE).count(), chunks.count()


def feature_chunks_summary(*, job_id: int) -> dict[str, Any]:
    """What the chunks did: how many, computed images, and the chunks each worker ran."""
    chunks = list(FeatureChunk.objects.filter(job_id=job_id))
    by_worker: dict[str, int] = defaultdict(int)
    for chunk in chunks:
        by_worker[chunk.worker or "(none)"] += 1
    return {
        "chunks": len(chunks),
        "chunks_done": sum(1 for c in chunks if c.state == FeatureChunk.State.DONE),
        "computed": sum(c.computed for c in chunks),
        "chunks_by_worker": dict(sorted(by_worker.items())),
        "redelivered": sum(1 for c in chunks if c.attempts > 1),
    }


def features_gather(*, config: FeatureConfig, keys: Sequence[str]) -> int:
    """Copy the manifest's features of ``keys`` missing from this machine's store (the local
    cache mlcore reads) into it; returns how many rows were copied. Keys the manifest lacks
    stay missing (mlcore extracts them locally)."""
    from mlcore.features.backbones import get_backbone
    from mlcore.features.shards import read_shard_rows
    from mlcore.features.store import FeatureStore, store_path

    if not storage.storage_is_remote() or not keys:
        return 0
    copied = 0
    store_dir = ml_config.feature_store_dir()
    for backbone, config_key in config_keys(config).items():
        with FeatureStore(
            store_path(store_dir, backbone, config.preprocessing),
            backbone=backbone,
            preprocessing=config.preprocessing,
            feature_dim=get_backbone(backbone).feature_dim,
            dtype=config.dtype,
        ) as store:
            missing = store.missing(keys)
            by_shard: dict[str, list[tuple[str, int]]] = defaultdict(list)
            for batch in _batches(missing):
                for key, shard, row in FeatureShardRow.objects.filter(
                    config_key=config_key, key__in=batch
                ).values_list("key", "shard", "row"):
                    by_shard[shard].append((key, row))
            for shard, pairs in by_shard.items():
                local = _scratch_dir() / f"{uuid.uuid4().hex}.h5"
                try:
                    storage.object_download(name=shard, target=local)
                    found, features = read_shard_rows(
                        local,
                        [row for _, row in pairs],
                        backbone=backbone,
                        preprocessing=config.preprocessing,
                        dtype=config.dtype,
                    )
                finally:
                    local.unlink(missing_ok=True)
                if found != [key for key, _ in pairs]:
                    raise ValueError(f"the manifest and shard {shard} disagree on its rows")
                copied += store.put(found, features)
    return copied


def features_prepare_local(
    *, config: FeatureConfig, names: Sequence[str | None], sha256s: Sequence[str]
) -> int:
    """Before a worker trains or predicts: the photographs (their ``Image.file`` names) in its
    local cache and their published features (by sha256) in its local store. Returns the rows
    gathered."""
    if not storage.storage_is_remote():
        return 0
    storage.media_localize(names)
    return features_gather(config=config, keys=[_key(sha) for sha in sha256s])
