"""The one storage seam (a leaf: Django only, so services, selectors and views may all use it):
where photographs, renders, model folders, checkpoints and feature shards live, and the local
cache that TensorFlow and h5py read from.

``FUNDUS_STORAGE=local`` (the default): everything stays in this machine's folders as before;
``MEDIA_ROOT``, ``FUNDUS_MODEL_DIR`` and ``FUNDUS_FEATURE_STORE`` *are* the storage, and every
function here is a plain path computation.

``FUNDUS_STORAGE=s3``: Django's default storage is the bucket (django-storages' ``S3Storage``,
configured in settings), and the same folders become a cache that any machine may lose: a file
missing locally is downloaded on first use (to a temporary name, then renamed, so a reader never
sees half a file), and what a machine produces (a render, a model folder, a feature shard) is
uploaded by its one writer before anything in the database points at it. Objects are named by
what they hold (a photograph's sha256, a version's name, a shard's random id), never overwritten
with other bytes, so a cached copy never goes stale.

Object names in the bucket: ``images/..`` (photographs, as ``Image.file`` names them),
``views/<mode>/<sha256>.png`` (renders), ``cams/<version id>/<sha256>.png`` (activation maps),
``models/<version name>/..`` (model folders), ``checkpoints/<digest>/..`` (fine-tuning
checkpoints) and ``features/<backbone>__<preprocessing>__<dtype>/<shard>.h5`` (feature shards).
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

from django.conf import settings
from django.core.files.storage import Storage, default_storage

# Downloads run in threads: each is network-bound, and a chunk of 256 photographs one at a time
# would spend most of its time waiting on round trips.
DOWNLOAD_THREADS = 8
MODELS_PREFIX = "models"
CHECKPOINTS_PREFIX = "checkpoints"
# A fine-tuning run publishes its new checkpoints this often: a killed worker's replacement
# resumes from at most this far back (plus the epoch in progress).
CHECKPOINT_PUBLISH_SECONDS = 60.0


class StorageMissing(FileNotFoundError):
    """An object the database points at is in neither the bucket nor the local cache."""


def storage_is_remote() -> bool:
    return settings.FUNDUS_STORAGE == "s3"


def object_storage() -> Storage:
    """The bucket (or, locally, MEDIA_ROOT's file system storage)."""
    return default_storage


def bucket_ensure() -> bool:
    """Create the bucket when it does not exist yet (remote storage, first start); returns
    whether it was created. Any other error (a wrong key, an unreachable endpoint) is raised."""
    if not storage_is_remote():
        return False
    from botocore.exceptions import ClientError

    bucket: Any = object_storage()  # django-storages' S3Storage
    client = bucket.connection.meta.client
    try:
        client.head_bucket(Bucket=bucket.bucket_name)
        return False
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket", "NotFound"):
            raise
    client.create_bucket(Bucket=bucket.bucket_name)
    return True


def media_cache_path(name: str) -> Path:
    """Where a media object (photograph, render, activation map) is on this machine's disk."""
    return Path(settings.MEDIA_ROOT) / name


def _atomic_write(target: Path, write: Callable[[Path], None]) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex}.part")
    try:
        write(temporary)
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)


def object_download(*, name: str, target: Path) -> Path:
    """Copy object ``name`` to ``target`` (atomically); raises ``StorageMissing``."""

    def write(temporary: Path) -> None:
        try:
            handle = object_storage().open(name, "rb")
        except FileNotFoundError:
            raise StorageMissing(f"{name} is missing from the object storage") from None
        with handle, temporary.open("wb") as out:
            shutil.copyfileobj(handle, out, length=1024 * 1024)

    _atomic_write(target, write)
    return target


def media_open(name: str | None) -> tuple[IO[bytes], int | None]:
    """(a readable stream of media object ``name``, its size): a local file, or the body of one
    S3 GET (no HEAD first, no download to a temporary file: a web server streams photographs
    without keeping them). Raises ``StorageMissing``."""
    if not name:
        raise StorageMissing("the image has no stored file")
    if not storage_is_remote():
        path = media_cache_path(name)
        try:
            return path.open("rb"), path.stat().st_size
        except FileNotFoundError:
            raise StorageMissing(f"{name} is missing from the media folder") from None
    from botocore.exceptions import ClientError

    bucket: Any = object_storage()  # django-storages' S3Storage
    try:
        answer = bucket.connection.meta.client.get_object(Bucket=bucket.bucket_name, Key=name)
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
            raise StorageMissing(f"{name} is missing from the object storage") from None
        raise
    return answer["Body"], answer.get("ContentLength")


def object_upload(*, path: Path, name: str) -> str:
    """Store the file ``path`` as object ``name`` (remote storage only; a no-op locally, where
    ``path`` already is the storage)."""
    if not storage_is_remote():
        return name
    with path.open("rb") as handle:
        return object_storage().save(name, handle)


def object_exists(name: str) -> bool:
    return object_storage().exists(name)


def local_copy(*, name: str, cache_path: Path) -> Path:
    """``cache_path``, downloading object ``name`` there first when it is missing (remote
    storage); locally the path is returned as it is."""
    if storage_is_remote() and not cache_path.is_file():
        object_download(name=name, target=cache_path)
    return cache_path


def media_local(name: str | None) -> Path:
    """A media object (a photograph's ``Image.file`` name) as a local file."""
    if not name:
        raise StorageMissing("the image has no stored file")
    return local_copy(name=name, cache_path=media_cache_path(name))


def media_localize(names: Iterable[str | None]) -> list[Path]:
    """Many media objects as local files, downloading the missing ones in parallel."""
    names = list(names)
    if not storage_is_remote():
        return [media_cache_path(name or "") for name in names]
    with ThreadPoolExecutor(max_workers=DOWNLOAD_THREADS) as pool:
        return list(pool.map(media_local, names))


def media_cached(cache_path: Path) -> Path | None:
    """A derived media file (below MEDIA_ROOT) if this machine or the bucket has it, else
    None: a render or activation map another machine produced is fetched once."""
    if cache_path.is_file():
        return cache_path
    if not storage_is_remote():
        return None
    name = cache_path.relative_to(Path(settings.MEDIA_ROOT)).as_posix()
    try:
        return object_download(name=name, target=cache_path)
    except StorageMissing:
        return None


def cached_product(*, name: str, cache_path: Path, produce: Callable[[Path], None]) -> Path:
    """A derived file (a render, an activation map): the cached copy, else the bucket's, else
    ``produce(cache_path)`` writes it and it is uploaded for every other machine."""
    if cache_path.is_file():
        return cache_path
    if storage_is_remote():
        try:
            return object_download(name=name, target=cache_path)
        except StorageMissing:
            pass
    produce(cache_path)
    object_upload(path=cache_path, name=name)
    return cache_path


def product_upload(*, name: str, cache_path: Path) -> None:
    """Publish a derived file another function wrote to its cache path (remote storage)."""
    if storage_is_remote() and cache_path.is_file():
        object_upload(path=cache_path, name=name)


# ---------------------------------------------------------------------------------------------
# Folders: model versions and fine-tuning checkpoints


def _folder_files(folder: Path) -> list[Path]:
    return sorted(path for path in folder.rglob("*") if path.is_file())


def _prefix_names(prefix: str) -> list[str]:
    """Every object name under ``prefix`` (recursively)."""
    storage = object_storage()
    names: list[str] = []
    pending = [prefix.rstrip("/")]
    while pending:
        current = pending.pop()
        try:
            directories, files = storage.listdir(current)
        except FileNotFoundError:
            continue
        names.extend(f"{current}/{file}" for file in files)
        pending.extend(f"{current}/{directory}" for directory in directories)
    return sorted(names)


def folder_upload(*, folder: Path, prefix: str) -> int:
    """Upload every file of ``folder`` under ``prefix``; returns how many (0 locally)."""
    if not storage_is_remote():
        return 0
    files = _folder_files(folder)
    for path in files:
        object_upload(path=path, name=f"{prefix}/{path.relative_to(folder).as_posix()}")
    return len(files)


def folder_download(*, prefix: str, folder: Path) -> int:
    """Download every object under ``prefix`` missing from ``folder``; returns how many."""
    if not storage_is_remote():
        return 0
    fetched = 0
    # metadata.json last: a model folder is complete once it is there (a download cut short
    # is resumed by the next caller).
    names = sorted(_prefix_names(prefix), key=lambda name: name.endswith("/metadata.json"))
    for name in names:
        target = folder / name[len(prefix) + 1 :]
        if not target.is_file():
            object_download(name=name, target=target)
            fetched += 1
    return fetched


def prefix_delete(prefix: str) -> int:
    """Delete every object under ``prefix`` (remote storage); returns how many."""
    if not storage_is_remote():
        return 0
    names = _prefix_names(prefix)
    for name in names:
        object_storage().delete(name)
    return len(names)


def model_folder_name(artifact_path: str) -> str:
    """A version's folder name (its name): the same on every machine, whatever its
    ``FUNDUS_MODEL_DIR``."""
    return Path(artifact_path).name


def model_folder_upload(*, folder: Path) -> int:
    """Publish a freshly trained version's folder (before its row points at it)."""
    return folder_upload(folder=folder, prefix=f"{MODELS_PREFIX}/{folder.name}")


def model_folder_local(artifact_path: str) -> Path:
    """A version's folder on this machine: the recorded path locally; with remote storage this
    machine's ``FUNDUS_MODEL_DIR/<name>``, downloaded on first use."""
    if not storage_is_remote():
        return Path(artifact_path)
    name = model_folder_name(artifact_path)
    folder = Path(settings.FUNDUS_MODEL_DIR) / name
    if not (folder / "metadata.json").is_file():
        fetched = folder_download(prefix=f"{MODELS_PREFIX}/{name}", folder=folder)
        if not fetched and not (folder / "metadata.json").is_file():
            raise StorageMissing(f"the model folder {name} is missing from the object storage")
    return folder


def model_file_local(artifact_path: str, filename: str) -> Path | None:
    """One file of a version's folder (a figure, its metadata), None when it has none: the web
    process reads these without fetching the whole network."""
    if not storage_is_remote():
        path = Path(artifact_path) / filename
        return path if path.is_file() else None
    name = model_folder_name(artifact_path)
    try:
        return local_copy(
            name=f"{MODELS_PREFIX}/{name}/{filename}",
            cache_path=Path(settings.FUNDUS_MODEL_DIR) / name / filename,
        )
    except StorageMissing:
        return None


def checkpoints_fetch(*, folder: Path) -> int:
    """Before a fine-tuning run: the checkpoints another (killed) worker published."""
    return folder_download(prefix=f"{CHECKPOINTS_PREFIX}/{folder.name}", folder=folder)


def checkpoints_publish(*, folder: Path, since: float = 0.0) -> int:
    """A fine-tuning run's checkpoints written after ``since`` (a time stamp), for whoever
    resumes it; returns how many files were uploaded."""
    if not storage_is_remote() or not folder.is_dir():
        return 0
    fresh = [path for path in _folder_files(folder) if path.stat().st_mtime >= since]
    for path in fresh:
        name = f"{CHECKPOINTS_PREFIX}/{folder.name}/{path.relative_to(folder).as_posix()}"
        object_upload(path=path, name=name)
    return len(fresh)


def checkpoints_publishing(
    *, folder: Path, progress: Callable[..., None], every: float = CHECKPOINT_PUBLISH_SECONDS
) -> Callable[..., None]:
    """``progress`` that also publishes the run's new checkpoints at most every ``every``
    seconds (the fine-tuning loop reports after each batch and epoch)."""
    if not storage_is_remote():
        return progress
    published = [time.time()]

    def report(*args: Any, **kwargs: Any) -> None:
        progress(*args, **kwargs)
        now = time.time()
        if now - published[0] >= every:
            checkpoints_publish(folder=folder, since=published[0] - 1)
            published[0] = now

    return report
