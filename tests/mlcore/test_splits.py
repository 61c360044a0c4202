from __future__ import annotations

import numpy as np
import pytest

from mlcore.data.splits import (
    assert_no_leak,
    attach_variants,
    grouped_holdout,
    grouped_kfold,
    groups_from_id_sets,
    merge_groups,
    read_near_duplicate_groups,
)
from mlcore.features.store import feature_key, parse_feature_key


def _patients(n_patients: int = 120, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """1-4 images per patient; grades mostly shared within a patient, as with two eyes."""
    rng = np.random.default_rng(seed)
    grades, patients = [], []
    for patient in range(n_patients):
        grade = int(rng.choice(5, p=[0.5, 0.1, 0.25, 0.05, 0.1]))
        for _ in range(int(rng.integers(1, 5))):
            grades.append(grade if rng.random() < 0.8 else int(rng.integers(0, 5)))
            patients.append(f"patient-{patient}")
    return np.asarray(grades), np.asarray(patients)


def test_kfold_never_puts_a_patient_on_both_sides():
    grades, patients = _patients()
    folds = grouped_kfold(grades, patients, n_splits=5, seed=2017)
    seen_in_test = np.zeros(grades.size, int)
    for train_idx, test_idx in folds:
        assert not set(patients[train_idx]) & set(patients[test_idx])
        assert np.intersect1d(train_idx, test_idx).size == 0
        assert train_idx.size + test_idx.size == grades.size
        seen_in_test[test_idx] += 1
    assert np.all(seen_in_test == 1)  # every image is tested exactly once


def test_kfold_is_stratified_and_reproducible():
    grades, patients = _patients(300)
    folds = grouped_kfold(grades, patients, n_splits=5, seed=1)
    overall = np.bincount(grades, minlength=5) / grades.size
    for _, test_idx in folds:
        share = np.bincount(grades[test_idx], minlength=5) / test_idx.size
        assert np.abs(share - overall).max() < 0.08
    again = grouped_kfold(grades, patients, n_splits=5, seed=1)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(folds, again, strict=True))


def test_holdout_keeps_patients_together_and_is_stratified():
    grades, patients = _patients(400)
    train_idx, test_idx = grouped_holdout(grades, patients, test_fraction=0.2, seed=5)
    assert not set(patients[train_idx]) & set(patients[test_idx])
    assert np.union1d(train_idx, test_idx).size == grades.size
    assert 0.12 < test_idx.size / grades.size < 0.28
    for grade in range(5):  # every grade represented on the test side
        assert (grades[test_idx] == grade).any()


def test_augmented_variants_stay_with_their_source_image():
    rng = np.random.default_rng(0)
    shas = [f"{i:064x}" for i in range(60)]
    grades = rng.integers(0, 3, 60)
    patients = np.repeat(np.arange(30), 2)  # two images per patient
    train_idx, test_idx = grouped_holdout(grades, patients, test_fraction=0.25, seed=2017)
    train_keys = [feature_key(shas[i], v) for i, v in attach_variants(train_idx, 20)]
    test_keys = [feature_key(shas[i], 0) for i in test_idx]  # variants never on the test side
    sources_train = {parse_feature_key(k)[0] for k in train_keys}
    sources_test = {parse_feature_key(k)[0] for k in test_keys}
    group_of = {sha: int(p) for sha, p in zip(shas, patients, strict=True)}
    assert_no_leak(sources_train, sources_test, group_of)
    assert len(train_keys) == 21 * train_idx.size
    # and the check itself catches a leak through a variant or through a patient
    with pytest.raises(AssertionError, match="source images"):
        assert_no_leak(sources_train | {next(iter(sources_test))}, sources_test, group_of)
    tested = next(iter(sources_test))
    partner = next(s for s in shas if group_of[s] == group_of[tested] and s != tested)
    with pytest.raises(AssertionError, match="patients"):
        assert_no_leak(sources_train | {partner}, sources_test - {partner}, group_of)


def test_merge_groups_is_transitive():
    patients = ["a", "a", "b", "c", None]
    files = ["x", "y", "y", "z", "z"]  # image 2 of patient b is a copy of patient a's image 1
    ids = merge_groups(patients, files)
    assert ids[0] == ids[1] == ids[2]
    assert ids[3] == ids[4]
    assert ids[0] != ids[3]


def test_near_duplicate_groups_file(tmp_path):
    path = tmp_path / "groups.txt"
    path.write_text("# comment line\naaa bbb ccc\n\nddd eee\n")
    sets = read_near_duplicate_groups(path)
    assert sets == [{"aaa", "bbb", "ccc"}, {"ddd", "eee"}]
    groups = groups_from_id_sets(["aaa", "zzz", "ccc", "eee"], sets)
    assert groups[0] == groups[2] != groups[3]
    assert groups[1] == "zzz"


def test_too_many_folds_is_a_clear_error():
    with pytest.raises(ValueError, match="number of groups"):
        grouped_kfold([0, 1, 0, 1], ["p", "p", "q", "q"], n_splits=3)
