"""The recipe-search harness (``bench/recipes.py``): its protocol is fixed and grouped, its rows
replace their earlier selves, and every candidate the issue asks for is listed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from bench import recipes


def context(tmp_path: Path) -> recipes.Context:
    y = np.asarray([i % 5 for i in range(200)])
    groups = np.asarray([i // 4 for i in range(200)])  # groups of four near-duplicates
    return recipes.Context(
        paths=[tmp_path / f"{i}.png" for i in range(200)], y=y, groups=groups,
        work=tmp_path, store=tmp_path, weights_dir=tmp_path, scored=tmp_path / "scored",
    )  # fmt: skip


def test_the_search_split_is_fixed_grouped_and_about_80_20(tmp_path):
    ctx = context(tmp_path)
    protocol, [(train, test)] = recipes.splits(ctx, None)
    assert protocol == "holdout80-20"
    assert not set(ctx.groups[train]) & set(ctx.groups[test])
    assert 0.15 < test.size / 200 < 0.25
    _, [(train_again, test_again)] = recipes.splits(ctx, None)
    assert np.array_equal(test, test_again) and np.array_equal(train, train_again)
    protocol, folds = recipes.splits(ctx, 5)
    assert protocol == "cv5" and len(folds) == 5
    assert sorted(np.concatenate([t for _, t in folds]).tolist()) == list(range(200))
    for fold_train, fold_test in folds:
        assert not set(ctx.groups[fold_train]) & set(ctx.groups[fold_test])


def test_a_rerun_replaces_its_row_and_keeps_the_others(tmp_path):
    out = tmp_path / "recipes.json"
    recipes.write_row(out, {"candidate": "head", "protocol": "holdout80-20", "cpu_minutes": 9})
    recipes.write_row(out, {"candidate": "head", "protocol": "cv5", "cpu_minutes": 40})
    recipes.write_row(out, {"candidate": "head", "protocol": "holdout80-20", "cpu_minutes": 8})
    saved = json.loads(out.read_text())
    assert "seed 2017" in saved["protocol"]
    assert sorted((r["protocol"], r["cpu_minutes"]) for r in saved["rows"]) == [
        ("cv5", 40),
        ("holdout80-20", 8),
    ]


def test_it_lists_every_kind_of_candidate(capsys):
    assert recipes.main(["--list"]) == 0
    listed = capsys.readouterr().out
    for name in (
        "head", "head_tta", "head_regression", "head_smooth", "ft_top4_v4", "ft_top8_v6",
        "ft_whole", "ft_lite1_top4_v4", "ft_lite2_top4_v4", "ft_top4_v4_tta", "ens_ft_head",
        "ens_ft_folds5",
    ):  # fmt: skip
        assert f"{name} " in listed
    args = recipes.parse(["--candidate", "head", "--limit", "40"])
    assert args.out.name == "smoke.json"  # smoke runs never touch bench/results


def test_the_stored_scorings_do_not_depend_on_where_the_dataset_lies(tmp_path):
    here, there = context(tmp_path / "a"), context(tmp_path / "b")
    assert here.tag == there.tag  # committed scorings resume on another machine or checkout


def test_a_tta_run_stores_its_plain_twin_so_the_pair_costs_one_training(tmp_path, monkeypatch):
    trainings = []

    def run(ctx, train, test, tta=False):
        trainings.append(tta)
        proba = np.full((test.size, 5), 0.2)
        info = {"best_epoch": 3}
        if tta:
            info["without_tta"] = {"proba": proba * 2, "pred": np.ones(test.size, np.int64)}
        return proba, np.zeros(test.size, np.int64), info

    plain = recipes.Candidate("plain", "", run, {})
    averaged = recipes.Candidate("averaged", "", run, {"tta": True})
    monkeypatch.setattr(recipes, "CANDIDATES", {"plain": plain, "averaged": averaged})
    ctx = context(tmp_path)
    train, test = np.arange(150), np.arange(150, 200)
    averaged.score(ctx, train, test, "cv5-0")
    proba, pred, info = plain.score(ctx, train, test, "cv5-0")
    assert trainings == [True]  # the twin came from the stored scoring, not a second training
    assert np.allclose(proba, 0.4) and pred.tolist() == [1] * 50
    assert info["best_epoch"] == 3 and info["cost"]["cpu_minutes"] >= 0


def fake_run(ctx, train, test):
    return np.full((test.size, 5), 0.2), ctx.y[test], {"best_epoch": 1}


def test_a_resumed_cv_reports_every_splits_own_minutes_not_the_last_runs(tmp_path, monkeypatch):
    """A CV resumed across sessions costs little in its last run; its row sums the minutes each
    split cost when it was scored, and says where only a training's wall time was kept."""
    model = recipes.Candidate("model", "", fake_run, {})
    blend = recipes.Candidate("blend", "", recipes.run_blend, {"members": ("model", "model")}, True)
    monkeypatch.setattr(recipes, "CANDIDATES", {"model": model, "blend": blend})
    ctx = context(tmp_path)
    _, folds = recipes.splits(ctx, 5)
    for f, (train, test) in enumerate(folds[:2]):  # scored in earlier sessions
        info = {"cost": {"cpu_minutes": 30.0, "wall_minutes": 20.0}} if f == 0 else {
            "train_seconds": 1500.0  # stored before costs were, by a run that was resumed
        }  # fmt: skip
        proba, pred, _ = fake_run(ctx, train, test)
        recipes._store(model.stored_at(ctx, train, test, f"cv5-{f}"), proba, pred, info)

    result = recipes.evaluate(ctx, model, 5)
    costs = [recipes.split_cost(info) for info in result["choices"]]
    assert costs[0] == {"cpu_minutes": 30.0, "wall_minutes": 20.0}
    assert costs[1] == {"cpu_minutes": None, "wall_minutes": None}  # not a resumed run's part
    assert all(c["cpu_minutes"] < 1 for c in costs[2:])  # scored now, and recorded with them
    total = recipes.total_cost(result["choices"])
    assert 30.0 <= total["cpu_minutes"] < 31.0
    assert total["partial"] == "1 of 5 parts scored before costs were recorded"

    # A blend costs what its members cost, though it reads them from their stored scorings.
    blended = recipes.evaluate(ctx, blend, 5)
    assert recipes.total_cost(blended["choices"])["cpu_minutes"] == 2 * total["cpu_minutes"]
