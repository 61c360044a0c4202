"""A progress bar and its text tell one story: "Heatmap 1 of 17" beside a bar at half-way said two
things (issue 21). The text gives the job's percent, and a step's messages say which step."""

from __future__ import annotations

import re

from django.urls import reverse

from grading.models import Job
from tests.factories_grading import GradingTestCase


class HomeProgressTextTests(GradingTestCase):
    def test_the_home_progress_text_gives_the_bars_percent_and_the_step(self):
        Job.objects.create(
            kind=Job.Kind.PREDICTIONS_REFRESH,
            state=Job.State.RUNNING,
            progress=53,
            message="Heatmap 1 of 17 (v3, step 2 of 2)",
        )
        self.login(self.adam)
        html = self.client.get(reverse("home")).content.decode()
        bar = re.search(r'role="progressbar" aria-valuenow="(\d+)"', html)
        text = re.search(r"data-job-progress-text>([^<]*)<", html)
        assert bar is not None and text is not None
        self.assertEqual(
            text.group(1).strip(), f"{bar.group(1)} % · Heatmap 1 of 17 (v3, step 2 of 2)"
        )
