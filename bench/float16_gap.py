"""The float16 gap (issue 19, item 3): the cached route trains the top on the frozen bottom's maps
stored as float16, and chooses the epoch, temperature and decoding on them, while the served
model runs the whole network in float32. This measures how far apart the two are.

Fine-tunes Lite0's top 4 blocks (2 epochs) on ``--n`` images of the shared set, then compares,
on ``--n`` *other* images, the calibrated probabilities and grades of the top on float16 maps
with those of the whole float32 network on the images.

    nice -n 15 .venv/bin/python bench/float16_gap.py --n 200
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from mlcore.models.calibration import apply_temperature  # noqa: E402
from mlcore.models.finetune import (  # noqa: E402
    FinetuneConfig,
    bottom_maps,
    build_network,
    finetune_fit,
    load_images,
    predict_logits,
)
from mlcore.pipelines.training import read_labels_csv  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", type=Path, default=REPO.parent / "shared/datasets/fundus")
    parser.add_argument("--weights-dir", type=Path, default=REPO.parent / "shared/weights")
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/float16_gap.json")
    args = parser.parse_args()
    os.environ.setdefault("FUNDUS_WEIGHTS_DIR", str(args.weights_dir))
    labels = read_labels_csv(args.dataset / "labels.csv")
    rng = np.random.default_rng(2017)
    rows = rng.permutation(len(labels.paths))[: 2 * args.n]
    paths = [labels.paths[i] for i in rows]
    y = np.asarray(labels.grades)[rows]
    config = FinetuneConfig(top_blocks=4, epochs=2, learning_rates=(1e-3,), variants=0)
    images = load_images(paths, size=224)
    train, score = slice(0, args.n), slice(args.n, 2 * args.n)
    with tempfile.TemporaryDirectory() as work:
        fit = finetune_fit(
            paths[train], y[train], config=config, checkpoint_dir=work, images=images[train]
        )
    # The bottom is frozen ImageNet layers: a fresh build has the trained network's bottom.
    net = build_network(config, weights_dir=args.weights_dir)
    maps16 = bottom_maps(net, images[score], config=config)  # float16, as cached for training
    t = fit.model.temperature_
    cached = apply_temperature(predict_logits(fit.top, maps16, batch_size=64), t)
    served = fit.model.predict_proba(images[score])  # the whole network, float32
    gap = np.abs(cached - served)
    result = {
        "n_scored": int(served.shape[0]),
        "max_abs_probability_difference": float(gap.max()),
        "mean_abs_probability_difference": float(gap.mean()),
        "argmax_disagreements": int((cached.argmax(1) != served.argmax(1)).sum()),
        "decoded_grade_disagreements": int(
            (fit.model.decode(cached) != fit.model.decode(served)).sum()
        ),
        "measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": "nice -n 15 .venv/bin/python bench/float16_gap.py --n " + str(args.n),
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
