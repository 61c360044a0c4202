"""How often the model abstains on degraded photographs, and wrongly on good ones.

A head is trained (``mlcore.pipelines.training.train_model``, which also fits the out-of-distribution
distance on its inner split) on a random sample of the shared graded set. Held-apart graded photos and
the raw IDRiD photographs are the *good* photos; their blurred, darkened and cropped copies
(``mlcore.data.quality.degraded_copy``, as in ``bench/quality.py``) the *degraded* ones. Each photo
is predicted as the web app does; the model abstains when its gradability score is below 0.5 or its
out-of-distribution score is above 1 (``grading/selectors/abstention.py``). Reported per rule and
combined, with 95 % Wilson intervals.

    python bench/abstention.py [--train 400] [--good 100] [--out bench/results/abstention.json]
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import PIL.Image  # noqa: E402

from mlcore.data.quality import (  # noqa: E402
    DEGRADATIONS,
    QualityThresholds,
    degraded_copy,
    gradability_score,
    quality_measure_image,
)
from mlcore.evaluation.agreement import wilson_interval  # noqa: E402
from mlcore.features.config import FeatureConfig  # noqa: E402
from mlcore.models.artifact import load_artifact  # noqa: E402
from mlcore.pipelines.ood import ood_scores_images  # noqa: E402
from mlcore.pipelines.training import TrainingConfig, train_model  # noqa: E402


def _labels(folder: Path) -> list[tuple[Path, int]]:
    with (folder / "labels.csv").open() as handle:
        return [(folder / row["filename"], int(row["grade"])) for row in csv.DictReader(handle)]


def _share(flags: list[bool]) -> dict[str, object]:
    interval = wilson_interval(sum(flags), len(flags))
    return {
        "k": sum(flags),
        "n": len(flags),
        "share": sum(flags) / len(flags) if flags else 0.0,
        "ci95": list(interval) if interval else None,
    }


def _photos(good: list[Path], out: Path) -> list[tuple[str, str, Path, float]]:
    """(group, kind, file, gradability score) of each good photo and its degraded copies."""
    thresholds = QualityThresholds()
    rows = []
    for index, path in enumerate(good):
        group = "raw" if "raw-fundus" in str(path) else "graded"
        with PIL.Image.open(path) as opened:
            photo = opened.convert("RGB")
        for kind in ("good", *DEGRADATIONS):
            image = photo if kind == "good" else degraded_copy(photo, kind)
            target = path if kind == "good" else out / f"{index:04d}-{kind}.jpg"
            if kind != "good":
                image.save(target, quality=92)
            score = gradability_score(quality_measure_image(image), thresholds)
            rows.append((group, kind, target, score))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared")
    parser.add_argument("--train", type=int, default=400, help="graded photos to train on")
    parser.add_argument("--good", type=int, default=100, help="held-apart graded photos")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "abstention.json")
    args = parser.parse_args()
    labelled = _labels(args.shared / "datasets" / "fundus")
    random.Random(2021).shuffle(labelled)
    train, held = labelled[: args.train], labelled[args.train : args.train + args.good]
    raw = sorted((args.shared / "datasets" / "raw-fundus").glob("*.jpg"))
    features = FeatureConfig(backbones=("mobilenet_v2",))
    weights = args.shared / "weights"
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="abstention-") as tmp:
        work = Path(tmp)
        trained = train_model(
            [p for p, _ in train],
            [g for _, g in train],
            out_dir=work / "model",
            feature_config=features,
            training_config=TrainingConfig(),
            store_dir=work / "store",
            weights_dir=weights,
        )
        artifact = load_artifact(trained.artifact_dir)
        photos = _photos([p for p, _ in held] + raw, work)
        ood = ood_scores_images(
            artifact, [p for _, _, p, _ in photos], store_dir=work / "store", weights_dir=weights
        )
        scorer_summary = json.loads((trained.artifact_dir / "metadata.json").read_text())
    rule = {
        "gradability": [score < 0.5 for *_, score in photos],
        "out_of_domain": [o is not None and o > 1.0 for o in ood],
    }
    rule["either (the app's rule)"] = [a or b for a, b in zip(*rule.values(), strict=True)]
    result: dict = {
        "trained_on": trained.n_train,
        "photos": {
            "graded": len(held),
            "raw": len(raw),
            "degraded": len(photos) - len(held) - len(raw),
        },
        "abstained": {},
        "seconds": round(time.perf_counter() - started, 1),
        "holdout_qwk": scorer_summary.get("metrics", {}).get("qwk"),
    }
    for name, flags in rule.items():
        by = {
            f"{group}/{kind}": _share(
                [f for (g, k, *_), f in zip(photos, flags, strict=True) if (g, k) == (group, kind)]
            )
            for group in ("graded", "raw")
            for kind in ("good", *DEGRADATIONS)
        }
        result["abstained"][name] = {
            "good (false abstentions)": _share(
                [f for (_, k, *_), f in zip(photos, flags, strict=True) if k == "good"]
            ),
            "degraded": _share(
                [f for (_, k, *_), f in zip(photos, flags, strict=True) if k != "good"]
            ),
            "by group and kind": by,
        }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
