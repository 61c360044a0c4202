"""Viewer renderings (cropped, red-free, Ben Graham, thumbnail) and the activation-map file."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import PIL.Image
from django.conf import settings
from django.urls import reverse

from tests.factories import image_make
from tests.factories_grading import (
    GradingTestCase,
    model_version_active_make,
    prediction_make,
    workbench_set,
)


def view_url(image, mode: str) -> str:
    return reverse("image_view", args=[image.pk, mode])


def png_of(response) -> PIL.Image.Image:
    return PIL.Image.open(io.BytesIO(b"".join(response.streaming_content)))


class ImageViewTests(GradingTestCase):
    def setUp(self):
        self.image = image_make()
        self.login(self.alice)

    def test_each_view_is_a_png_rendered_once_and_cached_on_disk(self):
        for mode, expected_mode in (
            ("cropped", "RGB"),
            ("red_free", "L"),
            ("ben_graham", "RGB"),
            ("thumb", "RGB"),
        ):
            with self.subTest(mode=mode):
                response = self.client.get(view_url(self.image, mode))
                self.assertEqual(response.status_code, 200)
                self.assertEqual(response["Content-Type"], "image/png")
                self.assertIn("private", response["Cache-Control"])
                picture = png_of(response)
                self.assertEqual(picture.mode, expected_mode)
                cached = Path(settings.MEDIA_ROOT) / "views" / mode / f"{self.image.sha256}.png"
                self.assertTrue(cached.is_file())
                stamp = cached.stat().st_mtime_ns
                png_of(self.client.get(view_url(self.image, mode)))
                self.assertEqual(cached.stat().st_mtime_ns, stamp)

    def test_red_free_is_the_green_channel(self):
        picture = png_of(self.client.get(view_url(self.image, "red_free")))
        cropped = png_of(self.client.get(view_url(self.image, "cropped")))
        self.assertEqual(picture.size, cropped.size)
        # The synthetic fundus is orange (R 180, G 80, B 40): the green channel is mid-grey, and
        # autocontrast stretches it; black border outside stays darkest.
        self.assertGreater(picture.getextrema()[1], 200)

    def test_an_unknown_view_is_404(self):
        self.assertEqual(self.client.get(view_url(self.image, "xray")).status_code, 404)

    def test_a_missing_photograph_is_404(self):
        Path(self.image.file.path).unlink()
        self.assertEqual(self.client.get(view_url(self.image, "cropped")).status_code, 404)

    def test_users_without_a_role_are_refused(self):
        self.login(self.nora)
        self.assertEqual(self.client.get(view_url(self.image, "cropped")).status_code, 403)
        self.assertEqual(
            self.client.get(reverse("image_cam", args=[self.image.pk])).status_code, 403
        )


class ImageCamTests(GradingTestCase):
    def setUp(self):
        self.version = model_version_active_make()
        self.image = image_make()
        prediction_make(
            image=self.image, version=self.version, probabilities=[0, 0, 1, 0, 0], with_cam=True
        )

    def test_reviewers_get_the_map(self):
        self.login(self.rita)
        response = self.client.get(reverse("image_cam", args=[self.image.pk]))
        self.assertEqual(response.status_code, 200)
        self.assertEqual(png_of(response).size, (32, 32))

    def test_an_assisted_grader_gets_the_map(self):
        workbench_set(blind_first_grader=False)
        self.login(self.alice)
        self.assertEqual(
            self.client.get(reverse("image_cam", args=[self.image.pk])).status_code, 200
        )

    def test_a_blinded_first_grader_does_not(self):
        self.login(self.alice)
        response = self.client.get(reverse("image_cam", args=[self.image.pk]))
        self.assertEqual(response.status_code, 403)
        self.assertIn(b"hidden until you save your grade", response.content)


class BenGrahamMaskTests(GradingTestCase):
    def test_the_ben_graham_view_is_grey_outside_a_disc_cut_at_top_and_bottom(self):
        from grading.services.renderings import _render

        # A wide camera photograph: an orange disc taller than the frame, black around it.
        height, width = 300, 450
        rows, cols = np.ogrid[:height, :width]
        disc = (rows - height / 2) ** 2 + (cols - width / 2) ** 2 < 190**2
        pixels = np.zeros((height, width, 3), np.uint8)
        pixels[disc] = (180, 80, 40)
        view = np.asarray(_render(Path("unused.jpg"), "ben_graham", pixels)).astype(int)
        size = view.shape[0]
        # The padding above and below the cropped disc (inside the filter's circle), where the
        # blurred fundus used to bleed in as blue-green arcs.
        band = view[int(size * 0.06) : int(size * 0.10), size // 2 - 20 : size // 2 + 20]
        self.assertTrue((band == 128).all(), band.reshape(-1, 3)[:5])
        centre = view[size // 2, size // 2]
        self.assertTrue((abs(centre - 128) < 40).all())
