"""The production web server's settings (grading/gunicorn_conf.py), as gunicorn reads them."""

from __future__ import annotations

import gc
import os

from gunicorn.config import Config


def test_gunicorn_reads_the_workers_threads_and_the_worker_hook() -> None:
    config = Config()
    # What `gunicorn -c python:grading.gunicorn_conf` does with the module's names.
    from grading import gunicorn_conf

    for name in ("workers", "threads", "timeout", "post_worker_init"):
        config.set(name, getattr(gunicorn_conf, name))
    assert (config.workers, config.threads, config.timeout) == (gunicorn_conf.workers, 1, 120)
    assert config.workers >= 3  # 2 x CPUs + 1
    assert config.post_worker_init is gunicorn_conf.post_worker_init


def test_a_started_worker_freezes_the_objects_of_start_up() -> None:
    from grading.gunicorn_conf import post_worker_init

    try:
        post_worker_init(worker=None)
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


def test_the_number_of_workers_can_be_set(monkeypatch) -> None:
    import importlib

    from grading import gunicorn_conf

    monkeypatch.setenv("FUNDUS_WEB_WORKERS", "7")
    assert importlib.reload(gunicorn_conf).workers == 7
    monkeypatch.delenv("FUNDUS_WEB_WORKERS")
    assert importlib.reload(gunicorn_conf).workers == 2 * (os.cpu_count() or 1) + 1
