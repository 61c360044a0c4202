"""Backups that restore: ``manage.py backup DEST`` and ``manage.py restore SRC``.

A backup folder holds

- ``database.pgdump`` (``pg_dump --format=custom``: one consistent snapshot of a live database)
  or ``database.sqlite3`` (SQLite's online backup API, which copies under a read lock);
- ``media/``: the photographs (and rendered views and heat maps) under MEDIA_ROOT;
- ``models/``: the model version folders under FUNDUS_MODEL_DIR;
- ``manifest.json``, written last: every file's size and SHA-256, the source folders, the time
  the snapshot began. A folder without a manifest is an unfinished backup and is never restored.

The database is copied first and the files after it: every row of the snapshot refers to files
that existed when it was taken (photographs are stored by content and never rewritten; model
folders are written before their version row). The feature store is left out: it is a cache,
recomputed by the "Compute missing features" job.

Restore checks every checksum before writing anything, then fills an empty database, MEDIA_ROOT
and FUNDUS_MODEL_DIR, and points the model versions at their new folders.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from grading import storage

MANIFEST = "manifest.json"
PG_DUMP_FILE = "database.pgdump"
SQLITE_FILE = "database.sqlite3"
FORMAT_VERSION = 1
_CHUNK = 1024 * 1024


class BackupError(RuntimeError):
    """The backup or restore cannot go on; the message says why and what to do."""


def _local_storage_only() -> None:
    # With FUNDUS_STORAGE=s3 the folders are caches: a backup of them would look complete and
    # miss most photographs and models. The bucket needs its own backup (versioning, replication).
    if storage.storage_is_remote():
        raise BackupError(
            "FUNDUS_STORAGE=s3: the photographs and models are in the bucket, not in local "
            "folders. Back up the database with pg_dump and the bucket with the object "
            "storage's own tools (versioning, replication); this command covers local storage."
        )


@dataclass(frozen=True)
class BackupSummary:
    path: Path
    files: int
    bytes: int
    started_at: dt.datetime


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _files_under(root: Path) -> Iterator[Path]:
    for folder, _dirs, names in os.walk(root):
        for name in sorted(names):
            yield Path(folder) / name


def _database() -> dict[str, Any]:
    return dict(connection.settings_dict)


def _is_sqlite(db: dict[str, Any]) -> bool:
    return str(db["ENGINE"]).endswith("sqlite3")


def _pg_env(db: dict[str, Any]) -> dict[str, str]:
    env = dict(os.environ)
    if db.get("PASSWORD"):
        env["PGPASSWORD"] = str(db["PASSWORD"])
    return env


def _pg_args(db: dict[str, Any]) -> list[str]:
    return [
        f"--host={db.get('HOST') or '127.0.0.1'}",
        f"--port={db.get('PORT') or 5432}",
        f"--username={db.get('USER') or 'postgres'}",
        f"--dbname={db['NAME']}",
    ]


def _run(command: list[str], env: dict[str, str]) -> None:
    if shutil.which(command[0]) is None:
        raise BackupError(f"{command[0]} is not installed (the PostgreSQL client tools).")
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise BackupError(f"{command[0]} failed: {result.stderr.strip()[-2000:]}")


def _database_dump(dest: Path) -> str:
    db = _database()
    if _is_sqlite(db):
        source = sqlite3.connect(str(db["NAME"]), timeout=60)
        target = sqlite3.connect(str(dest / SQLITE_FILE))
        try:
            source.backup(target)  # all pages in one step: one consistent snapshot
        finally:
            target.close()
            source.close()
        return SQLITE_FILE
    command = ["pg_dump", "--format=custom", "--no-owner", "--no-privileges"]
    _run([*command, f"--file={dest / PG_DUMP_FILE}", *_pg_args(db)], _pg_env(db))
    return PG_DUMP_FILE


def _copy_tree(source: Path, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        shutil.copytree(source, dest, dirs_exist_ok=True, symlinks=False)


def backup_create(*, dest: Path) -> BackupSummary:
    """Write a complete backup into ``dest`` (a new or empty folder)."""
    _local_storage_only()
    dest = Path(dest)
    if dest.exists() and any(dest.iterdir()):
        raise BackupError(f"{dest} is not empty: back up into a new folder.")
    dest.mkdir(parents=True, exist_ok=True)
    started_at = timezone.now()
    database_file = _database_dump(dest)
    media_root, model_dir = Path(settings.MEDIA_ROOT), Path(settings.FUNDUS_MODEL_DIR)
    _copy_tree(media_root, dest / "media")
    _copy_tree(model_dir, dest / "models")
    files: dict[str, dict[str, Any]] = {
        str(path.relative_to(dest)): {"size": path.stat().st_size, "sha256": _sha256(path)}
        for path in sorted(_files_under(dest))
    }
    manifest = {
        "format": FORMAT_VERSION,
        "started_at": started_at.isoformat(),
        "finished_at": timezone.now().isoformat(),
        "database": {"engine": "sqlite" if database_file == SQLITE_FILE else "postgresql"},
        "database_file": database_file,
        "media_root": str(media_root),
        "model_dir": str(model_dir),
        "files": files,
    }
    (dest / MANIFEST).write_text(json.dumps(manifest, indent=1))
    total = sum(entry["size"] for entry in files.values())
    return BackupSummary(path=dest, files=len(files), bytes=total, started_at=started_at)


def backup_verify(*, src: Path) -> dict[str, Any]:
    """The manifest of the backup in ``src`` once every file matches its checksum."""
    src = Path(src)
    manifest_path = src / MANIFEST
    if not manifest_path.is_file():
        raise BackupError(f"{src} has no {MANIFEST}: it is not a backup, or an unfinished one.")
    manifest: dict[str, Any] = json.loads(manifest_path.read_text())
    if manifest.get("format") != FORMAT_VERSION:
        raise BackupError(f"Unknown backup format {manifest.get('format')!r}.")
    for name, entry in manifest["files"].items():
        path = src / name
        if not path.is_file() or path.stat().st_size != entry["size"]:
            raise BackupError(f"{name} is missing or has the wrong size: the backup is damaged.")
        if _sha256(path) != entry["sha256"]:
            raise BackupError(f"{name} does not match its checksum: the backup is damaged.")
    return manifest


def _folder_is_empty(path: Path) -> bool:
    return not path.exists() or next(_files_under(path), None) is None


def _database_restore(src: Path, manifest: dict[str, Any]) -> None:
    db = _database()
    engine = manifest["database"]["engine"]
    if _is_sqlite(db) != (engine == "sqlite"):
        here = "SQLite" if _is_sqlite(db) else "PostgreSQL"
        raise BackupError(f"This backup holds a {engine} database; this installation uses {here}.")
    connection.close()
    if _is_sqlite(db):
        source = sqlite3.connect(str(src / SQLITE_FILE))
        target = sqlite3.connect(str(db["NAME"]))
        try:
            source.backup(target)
        finally:
            target.close()
            source.close()
        return
    command = ["pg_restore", "--no-owner", "--no-privileges", "--exit-on-error"]
    _run([*command, "--single-transaction", *_pg_args(db), str(src / PG_DUMP_FILE)], _pg_env(db))


def _model_paths_remap(*, old_dir: Path, new_dir: Path) -> int:
    """Point the restored versions' folders from the old FUNDUS_MODEL_DIR to this one."""
    from grading.models import ModelVersion

    moved = 0
    with transaction.atomic():
        for pk, artifact_path in ModelVersion.objects.exclude(artifact_path="").values_list(
            "pk", "artifact_path"
        ):
            try:
                relative = Path(artifact_path).relative_to(old_dir)
            except ValueError:
                continue  # a folder outside the model directory was not backed up either
            new_path = str(new_dir / relative)
            moved += ModelVersion.objects.filter(pk=pk).update(artifact_path=new_path)
    return moved


def backup_restore(*, src: Path) -> dict[str, Any]:
    """Rebuild this (empty) installation from the backup in ``src``: database, MEDIA_ROOT and
    FUNDUS_MODEL_DIR. Refuses, before writing anything, a damaged backup or a target in use."""
    _local_storage_only()
    src = Path(src)
    manifest = backup_verify(src=src)
    if connection.introspection.table_names():
        raise BackupError(
            "The database is not empty: restore only into a new, empty database "
            "(create it, do not run migrate, then restore)."
        )
    media_root, model_dir = Path(settings.MEDIA_ROOT), Path(settings.FUNDUS_MODEL_DIR)
    for folder in (media_root, model_dir):
        if not _folder_is_empty(folder):
            raise BackupError(f"{folder} is not empty: restore only into empty folders.")
    _database_restore(src, manifest)
    _copy_tree(src / "media", media_root)
    _copy_tree(src / "models", model_dir)
    _model_paths_remap(old_dir=Path(manifest["model_dir"]), new_dir=model_dir)
    return manifest
