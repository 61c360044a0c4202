"""How well the gradability score separates good photographs from degraded copies.

Good: the shared graded set (224 px, Gaussian-filtered) and the raw IDRiD photographs (4288 x 2848).
Degraded: a blurred, a darkened and a cropped (fundus shifted out of frame) copy of each, made by
``mlcore.data.quality.degraded_copy``. Reports the ROC AUC of the score (good vs degraded, overall and
per degradation), the pass rate of each group at the default thresholds, and the time per measure.

    python bench/quality.py [--limit N] [--out bench/results/quality.json]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
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
    separation_auc,
)


def load(path: Path) -> PIL.Image.Image:
    with PIL.Image.open(path) as opened:
        if opened.format == "JPEG":
            opened.draft("RGB", (1024, 1024))
        return opened.convert("RGB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "datasets")
    parser.add_argument("--limit", type=int, default=0, help="sample this many graded images")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "quality.json")
    args = parser.parse_args()
    graded = sorted((args.shared / "fundus").glob("*/*.jpg"))
    if args.limit:
        graded = sorted(random.Random(2017).sample(graded, args.limit))
    raw = sorted((args.shared / "raw-fundus").glob("*.jpg"))
    thresholds = QualityThresholds()
    scores: dict[str, dict[str, list[float]]] = {
        group: {"good": [], **{kind: [] for kind in DEGRADATIONS}} for group in ("graded", "raw")
    }
    seconds = []
    for group, paths in (("graded", graded), ("raw", raw)):
        for path in paths:
            photo = load(path)
            for kind in ("good", *DEGRADATIONS):
                image = photo if kind == "good" else degraded_copy(photo, kind)
                started = time.perf_counter()
                measures = quality_measure_image(image)
                seconds.append(time.perf_counter() - started)
                scores[group][kind].append(gradability_score(measures, thresholds))
    good = scores["graded"]["good"] + scores["raw"]["good"]
    result: dict = {
        "images": {"graded": len(graded), "raw": len(raw)},
        "thresholds": thresholds.__dict__,
        "auc_all": separation_auc(
            good, [s for g in scores.values() for k in DEGRADATIONS for s in g[k]]
        ),
        "auc_per_degradation": {
            kind: separation_auc(good, scores["graded"][kind] + scores["raw"][kind])
            for kind in DEGRADATIONS
        },
        "pass_rate": {
            group: {kind: sum(s >= 0.5 for s in values) / len(values) for kind, values in g.items()}
            for group, g in scores.items()
            if g["good"]
        },
        "median_ms_per_measure": 1000 * sorted(seconds)[len(seconds) // 2],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
