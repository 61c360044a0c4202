"""Photo-quality measures and the gradability score: good photographs (the shared set and raw
IDRiD photos) pass, blurred, darkened and cropped copies made here fail."""

from __future__ import annotations

import io

import numpy as np
import PIL.Image
import pytest

from mlcore.data.quality import (
    DEGRADATIONS,
    QualityMeasures,
    QualityThresholds,
    degraded_copy,
    gradability_components,
    gradability_score,
    quality_measure_bytes,
    quality_measure_image,
    separation_auc,
)
from tests.factories import fundus_jpeg_bytes


def synthetic_photo(size: int = 512) -> PIL.Image.Image:
    return PIL.Image.open(io.BytesIO(fundus_jpeg_bytes(size=size, seed=99)))


def test_it_measures_focus_exposure_coverage_and_resolution():
    measures = quality_measure_image(synthetic_photo())
    assert (measures.width, measures.height) == (512, 512)
    # The synthetic disc has a radius of 45 % of the frame: pi * 0.45^2 = 0.64 of it.
    assert measures.coverage == pytest.approx(0.64, abs=0.05)
    assert measures.dark_fraction < 0.1 and measures.bright_fraction < 0.05
    assert measures.focus > 10


def test_each_component_is_one_half_at_its_threshold_and_resolution_is_met_or_not():
    thresholds = QualityThresholds(
        min_focus=4, max_clipped=0.2, min_coverage=0.5, min_resolution=300
    )
    at_threshold = QualityMeasures(
        focus=4, dark_fraction=0.1, bright_fraction=0.1, coverage=0.5, width=400, height=300
    )
    assert gradability_components(at_threshold, thresholds) == pytest.approx(
        {"focus": 0.5, "exposure": 0.5, "coverage": 0.5, "resolution": 1.0}
    )
    small = QualityMeasures(
        focus=100, dark_fraction=0, bright_fraction=0, coverage=0.9, width=200, height=150
    )
    assert gradability_score(small, thresholds) == pytest.approx(0.25)


def test_it_survives_a_blank_frame():
    blank = PIL.Image.new("RGB", (300, 200))
    measures = quality_measure_image(blank)
    assert measures.coverage == 0.0
    assert gradability_score(measures) == 0.0


@pytest.mark.parametrize("kind", DEGRADATIONS)
def test_a_degraded_synthetic_photo_fails(kind):
    assert gradability_score(quality_measure_image(synthetic_photo())) >= 0.5
    assert gradability_score(quality_measure_image(degraded_copy(synthetic_photo(), kind))) < 0.5


def test_the_score_separates_real_photos_from_their_degraded_copies(
    fundus_dataset_dir, raw_fundus_dir
):
    # A fixed, spread-out sample: every 200th image of the shared set and 3 raw camera photos.
    shared = sorted(fundus_dataset_dir.glob("*/*.jpg"))[::200]
    raw = sorted(raw_fundus_dir.glob("*.jpg"))[:3]
    good, degraded = [], []
    for path in [*shared, *raw]:
        with PIL.Image.open(path) as opened:
            if opened.format == "JPEG":
                opened.draft("RGB", (1024, 1024))
            photo = opened.convert("RGB")
        good.append(gradability_score(quality_measure_image(photo)))
        degraded += [
            gradability_score(quality_measure_image(degraded_copy(photo, kind)))
            for kind in DEGRADATIONS
        ]
    assert len(good) >= 15
    assert min(good) >= 0.5, "every good photograph passes"
    assert max(degraded) < 0.5, "every degraded copy fails"
    assert separation_auc(good, degraded) == 1.0


def test_it_measures_bytes_like_a_decoded_image():
    data = fundus_jpeg_bytes(size=256, seed=5)
    assert quality_measure_bytes(data) == quality_measure_image(PIL.Image.open(io.BytesIO(data)))


def test_separation_auc_counts_ties_as_half():
    assert separation_auc([1.0, 0.8], [0.1, 0.8]) == pytest.approx(0.875)
    assert np.isclose(separation_auc([0.5], [0.5]), 0.5)
