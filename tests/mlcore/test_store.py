"""The HDF5 feature store: keys, round trips, incrementality, refusals and crash safety."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from mlcore.features.store import (
    FeatureStore,
    StoreMismatchError,
    feature_key,
    parse_feature_key,
    store_path,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
DIM = 8


def _key(i: int, variant: int = 0) -> str:
    return feature_key(hashlib.sha256(str(i).encode()).hexdigest(), variant)


def _features(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)


def _open(path: Path, **kwargs) -> FeatureStore:
    options = {"backbone": "mobilenet_v2", "preprocessing": "none", "feature_dim": DIM}
    options.update(kwargs)
    return FeatureStore(path, **options)


def test_feature_keys_round_trip() -> None:
    sha = hashlib.sha256(b"image").hexdigest()
    assert feature_key(sha) == sha
    assert feature_key(sha.upper(), 3) == f"{sha}#v3"
    assert parse_feature_key(f"{sha}#v3") == (sha, 3)
    assert parse_feature_key(sha) == (sha, 0)
    for bad in ("abc", f"{sha}#v0", f"{sha}#x1", f"{sha}#v-1"):
        with pytest.raises(ValueError):
            parse_feature_key(bad)
    with pytest.raises(ValueError):
        feature_key("not-a-digest")
    with pytest.raises(ValueError):
        feature_key(sha, -1)


def test_store_path_has_one_file_per_backbone_and_preprocessing(tmp_path: Path) -> None:
    assert store_path(tmp_path, "resnet50", "ben_graham") == tmp_path / "resnet50__ben_graham.h5"
    with pytest.raises(ValueError):
        store_path(tmp_path, "../etc", "none")


def test_it_round_trips_in_the_order_asked(tmp_path: Path) -> None:
    keys = [_key(i) for i in range(50)]
    features = _features(50)
    with _open(tmp_path / "s.h5") as store:
        assert store.put(keys, features) == 50
        order = [7, 3, 49, 0, 3]
        np.testing.assert_array_equal(store.get([keys[i] for i in order]), features[order])
        assert len(store) == 50 and store.keys() == set(keys)
    with _open(tmp_path / "s.h5", mode="r") as store:
        result = store.get(keys[::-1])
        assert result.dtype == np.float32
        np.testing.assert_array_equal(result, features[::-1])


def test_it_is_incremental_and_put_is_idempotent(tmp_path: Path) -> None:
    keys = [_key(i) for i in range(30)]
    features = _features(30)
    with _open(tmp_path / "s.h5") as store:
        store.put(keys[:10], features[:10])
    with _open(tmp_path / "s.h5") as store:
        assert store.missing(keys + keys[:12]) == keys[10:]
        assert store.put(keys[5:20], features[5:20]) == 10  # 5..9 were stored already
        assert store.put(keys[:20], _features(20, seed=9)) == 0  # stored values are kept
        np.testing.assert_array_equal(store.get(keys[:20]), features[:20])
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == ["s.h5"]


def test_variants_are_separate_keys(tmp_path: Path) -> None:
    with _open(tmp_path / "s.h5") as store:
        store.put([_key(1), _key(1, 1), _key(1, 2)], _features(3))
        assert {parse_feature_key(k)[1] for k in store} == {0, 1, 2}


def test_float16_storage_halves_precision_not_the_api(tmp_path: Path) -> None:
    keys = [_key(i) for i in range(20)]
    features = _features(20) * 3
    with _open(tmp_path / "h.h5", dtype="float16") as store:
        store.put(keys, features)
    with h5py.File(tmp_path / "h.h5", "r") as file:
        assert file["features"].dtype == np.float16
    with _open(tmp_path / "h.h5", dtype="float16", mode="r") as store:
        result = store.get(keys)
    assert result.dtype == np.float32
    np.testing.assert_allclose(result, features, rtol=1e-3, atol=1e-3)


def test_get_names_the_missing_keys(tmp_path: Path) -> None:
    with _open(tmp_path / "s.h5") as store:
        store.put([_key(1)], _features(1))
        with pytest.raises(KeyError, match=_key(2)):
            store.get([_key(1), _key(2)])


def test_put_rejects_bad_arrays(tmp_path: Path) -> None:
    with _open(tmp_path / "s.h5") as store:
        with pytest.raises(ValueError, match=r"shape \(2, 8\)"):
            store.put([_key(1), _key(2)], np.zeros((2, 7)))
        bad = _features(1)
        bad[0, 0] = np.nan
        with pytest.raises(ValueError, match="NaN"):
            store.put([_key(1)], bad)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"backbone": "resnet50"}, "backbone='mobilenet_v2' but 'resnet50'"),
        ({"preprocessing": "ben_graham"}, "preprocessing='none' but 'ben_graham'"),
        ({"feature_dim": DIM + 1}, "feature_dim=8 but 9"),
        ({"dtype": "float16"}, "dtype='float32' but 'float16'"),
    ],
)
def test_it_refuses_a_store_written_for_something_else(
    tmp_path: Path, change: dict, message: str
) -> None:
    with _open(tmp_path / "s.h5") as store:
        store.put([_key(1)], _features(1))
    for mode in ("a", "r"):
        with pytest.raises(StoreMismatchError, match=message):
            _open(tmp_path / "s.h5", mode=mode, **change)


def test_a_file_that_is_not_a_store_is_refused(tmp_path: Path) -> None:
    with h5py.File(tmp_path / "other.h5", "w") as file:
        file["data"] = np.zeros(3)
    with pytest.raises(StoreMismatchError):
        _open(tmp_path / "other.h5")
    (tmp_path / "junk.h5").write_bytes(b"junk")
    with pytest.raises(OSError, match="cannot be read as HDF5"):
        _open(tmp_path / "junk.h5", mode="r")


def test_read_only_stores_do_not_write(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        _open(tmp_path / "absent.h5", mode="r")
    with _open(tmp_path / "s.h5") as store:
        store.put([_key(1)], _features(1))
    reader = _open(tmp_path / "s.h5", mode="r")
    with pytest.raises(ValueError, match="read-only"):
        reader.put([_key(2)], _features(1))


def test_a_reader_keeps_working_while_a_writer_compacts(tmp_path: Path) -> None:
    keys = [_key(i) for i in range(40)]
    features = _features(40)
    writer = _open(tmp_path / "s.h5")
    writer.put(keys[:20], features[:20])
    reader = _open(tmp_path / "s.h5", mode="r")  # indexes the journal segments
    writer.put(keys[20:], features[20:])
    writer.close()  # compaction deletes the segments the reader knew
    np.testing.assert_array_equal(reader.get(keys[:20]), features[:20])
    assert len(_open(tmp_path / "s.h5", mode="r")) == 40


def test_a_large_store_compacts_in_the_background_of_puts(tmp_path: Path) -> None:
    keys = [_key(i) for i in range(5000)]
    features = np.random.default_rng(0).standard_normal((5000, DIM)).astype(np.float32)
    with _open(tmp_path / "s.h5") as store:
        for start in range(0, 5000, 100):
            store.put(keys[start : start + 100], features[start : start + 100])
        segments = list(store.journal_dir.glob("*.h5")) if store.journal_dir.exists() else []
        assert len(segments) < 30  # compaction kept the journal short
        picked = np.random.default_rng(1).permutation(5000)[:700]
        np.testing.assert_array_equal(store.get([keys[i] for i in picked]), features[picked])


# -- crash safety: a real writer process killed with SIGKILL ------------------------------------

_WRITER = r"""
import hashlib, os, signal, sys
import numpy as np
import mlcore.features.store as st

path, total, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
kill_point, arm_after = os.environ.get("KILL_POINT"), int(os.environ.get("ARM_AFTER", "0"))
st._COMPACT_MIN_ROWS = int(os.environ.get("COMPACT_MIN_ROWS", "64"))
st._COPY_CHUNK_ROWS = int(os.environ.get("COPY_CHUNK_ROWS", "4096"))
puts = 0
real_replace = os.replace

def replace(src, dst):
    # Die at an exact point of the write protocol, as if killed there.
    main = os.path.abspath(dst) == os.path.abspath(path)
    if puts >= arm_after:
        if kill_point == ("before_main_rename" if main else "before_segment_rename"):
            os.kill(os.getpid(), signal.SIGKILL)
    real_replace(src, dst)
    if main and puts >= arm_after and kill_point == "after_main_rename":
        os.kill(os.getpid(), signal.SIGKILL)

st.os.replace = replace

def key(i):
    return st.feature_key(hashlib.sha256(str(i).encode()).hexdigest())

def features(i):
    return np.random.default_rng(i).standard_normal(64).astype(np.float32)

store = st.FeatureStore(path, backbone="test", preprocessing="none", feature_dim=64)
todo = [i for i in range(total) if key(i) not in store]
print("resumed with", len(store), flush=True)
for start in range(0, len(todo), batch):
    chunk = todo[start:start + batch]
    store.put([key(i) for i in chunk], np.stack([features(i) for i in chunk]))
    puts += 1
    print("put", flush=True)
store.close()
print("done", flush=True)
"""

TOTAL, BATCH = 1600, 16


def _expected(i: int) -> np.ndarray:
    return np.random.default_rng(i).standard_normal(64).astype(np.float32)


def _writer(path: Path, script: Path, **env: str) -> subprocess.Popen:
    environment = dict(os.environ, PYTHONPATH=str(REPO_ROOT), **env)
    return subprocess.Popen(
        [sys.executable, str(script), str(path), str(TOTAL), str(BATCH)],
        stdout=subprocess.PIPE,
        text=True,
        env=environment,
    )


def _check_consistent(path: Path) -> int:
    """The store opens, every stored key holds exactly its features, whole batches only."""
    store = FeatureStore(path, backbone="test", preprocessing="none", feature_dim=64, mode="r")
    keys = {_key(i): i for i in range(TOTAL)}
    stored = sorted(store.keys())
    assert set(stored) <= set(keys)
    if stored:
        expected = np.stack([_expected(keys[k]) for k in stored])
        np.testing.assert_array_equal(store.get(stored), expected)
    assert len(stored) % BATCH == 0
    return len(stored)


@pytest.fixture
def writer_script(tmp_path: Path) -> Path:
    script = tmp_path / "writer.py"
    script.write_text(_WRITER)
    return script


@pytest.mark.slow
@pytest.mark.parametrize(
    "kill_point", ["before_segment_rename", "before_main_rename", "after_main_rename"]
)
def test_a_writer_killed_at_each_step_of_the_protocol_leaves_a_usable_store(
    tmp_path: Path, writer_script: Path, kill_point: str
) -> None:
    path = tmp_path / "store.h5"
    process = _writer(path, writer_script, KILL_POINT=kill_point, ARM_AFTER="6")
    process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL
    stored = _check_consistent(path)
    assert stored >= 5 * BATCH
    finished = _writer(path, writer_script)
    output, _ = finished.communicate(timeout=60)
    assert finished.returncode == 0 and f"resumed with {stored}" in output
    assert _check_consistent(path) == TOTAL
    assert not list(tmp_path.glob("*.tmp")) and not (tmp_path / "store.h5.journal").exists()


@pytest.mark.slow
def test_a_writer_killed_mid_compaction_and_at_random_moments_resumes(
    tmp_path: Path, writer_script: Path
) -> None:
    path = tmp_path / "store.h5"
    # Row-by-row copying makes compaction slow enough to be caught half-written.
    process = _writer(path, writer_script, COPY_CHUNK_ROWS="1", COMPACT_MIN_ROWS="256")
    assert process.stdout is not None
    for _ in range(20):  # past the first compaction (at 256 rows): the main file has rows
        assert process.stdout.readline()
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob("store.h5.*.tmp")):
        assert process.poll() is None and time.monotonic() < deadline, "no compaction seen"
        time.sleep(0.002)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert list(tmp_path.glob("store.h5.*.tmp")), "killed after the compaction finished"
    counts = [_check_consistent(path)]
    rng = random.Random(0)
    for _ in range(4):
        process = _writer(path, writer_script, COMPACT_MIN_ROWS="32")
        assert process.stdout is not None
        for _ in range(rng.randint(2, 10)):
            process.stdout.readline()
        time.sleep(rng.uniform(0, 0.05))
        process.send_signal(signal.SIGKILL)
        process.wait()
        counts.append(_check_consistent(path))
    assert counts == sorted(counts) and counts[-1] > counts[0]  # progress is kept
    finished = _writer(path, writer_script)
    finished.communicate(timeout=60)
    assert finished.returncode == 0
    assert _check_consistent(path) == TOTAL


def test_leftovers_of_a_dead_writer_are_ignored_and_cleaned(tmp_path: Path) -> None:
    path = tmp_path / "s.h5"
    with _open(path) as store:
        store.put([_key(1)], _features(1))
    journal = path.with_name("s.h5.journal")
    journal.mkdir()
    (journal / "000000000001-dead.h5.x.tmp").write_bytes(b"torn segment")
    (tmp_path / "s.h5.deadbeef.tmp").write_bytes(b"torn main file")
    assert len(_open(path, mode="r")) == 1  # readers ignore temp files
    with _open(path) as store:  # a writer removes them
        assert len(store) == 1
    assert not list(tmp_path.rglob("*.tmp"))


def test_a_segment_torn_by_an_os_crash_is_skipped_and_recomputed(tmp_path: Path) -> None:
    path = tmp_path / "s.h5"
    writer = _open(path)
    writer.put([_key(1)], _features(1))
    writer.put([_key(2)], _features(1, seed=2))
    segments = sorted(writer.journal_dir.glob("*.h5"))
    writer._release_lock()  # as if the machine died: no compaction
    segments[-1].write_bytes(b"\0" * 100)  # renamed but never flushed to disk
    with pytest.warns(UserWarning, match="ignoring unreadable feature segment"):
        reader = _open(path, mode="r")
    assert reader.keys() == {_key(1)}
    with pytest.warns(UserWarning), _open(path) as store:
        assert store.missing([_key(1), _key(2)]) == [_key(2)]
        store.put([_key(2)], _features(1, seed=2))
    np.testing.assert_array_equal(_open(path, mode="r").get([_key(2)]), _features(1, seed=2))
