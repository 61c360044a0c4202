"""How well the perceptual hash separates copies from distinct photographs (issue 19, item 4).

Hashes the shared set, reports the distribution of Hamming distances between distinct images
(every pair) and, for every 25th image, the distance to its copies (re-encoded, resized,
brightened), against ``mlcore.data.near_duplicates.MAX_DISTANCE``.

    nice -n 15 .venv/bin/python bench/near_duplicates.py
"""

from __future__ import annotations

import io
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from mlcore.data.near_duplicates import (  # noqa: E402
    MAX_DISTANCE,
    hamming_distances,
    near_duplicate_labels,
    perceptual_hash,
    perceptual_hash_of_bytes,
)
from mlcore.pipelines.labels import read_labels_csv  # noqa: E402


def jpeg(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


COPIES: dict[str, Callable[[Image.Image], Image.Image]] = {
    "jpeg_q90": lambda i: jpeg(i, 90),
    "jpeg_q70": lambda i: jpeg(i, 70),
    "half_then_back": lambda i: i.resize((i.width // 2, i.height // 2)).resize(i.size),
    "double": lambda i: i.resize((i.width * 2, i.height * 2)),
    "brightness_1.1": lambda i: ImageEnhance.Brightness(i).enhance(1.1),
}


def main() -> int:
    dataset = REPO.parent / "shared/datasets/fundus"
    labels = read_labels_csv(dataset / "labels.csv")
    started = time.perf_counter()
    hashes = [perceptual_hash_of_bytes(p.read_bytes()) for p in labels.paths]
    seconds = time.perf_counter() - started
    distances = hamming_distances(hashes)
    pairs = distances[np.triu_indices(len(hashes), 1)]
    copies = {}
    for name, make in COPIES.items():
        found = []
        for i in range(0, len(hashes), 25):
            with Image.open(labels.paths[i]) as image:
                copy_hash = perceptual_hash(make(image.convert("RGB")))
            found.append(int(hamming_distances([copy_hash, hashes[i]])[0, 1]))
        copies[name] = {
            "n": len(found),
            "max_distance": max(found),
            "caught": round(float(np.mean(np.asarray(found) <= MAX_DISTANCE)), 3),
        }
    result = {
        "n_images": len(hashes),
        "hash_ms_per_image": round(1000 * seconds / len(hashes), 2),
        "max_distance": MAX_DISTANCE,
        "distinct_pairs": int(pairs.size),
        "distinct_min_distance": int(pairs.min()),
        "distinct_pairs_within_max_distance": int((pairs <= MAX_DISTANCE).sum()),
        "images_grouped_as_near_duplicates": sum(1 for x in near_duplicate_labels(hashes) if x),
        "copies": copies,
    }
    out = REPO / "bench/results/near_duplicates.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
