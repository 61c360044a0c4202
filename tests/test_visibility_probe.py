"""The visibility matrix (issue 20): every route, the admin pages, the audit page, the API and
the exports, for a first reader, a second reader, an admin who grades and a reviewer: no leak,
no server error (tests/visibility_probe.py)."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User

from tests.factories import image_make
from tests.factories_grading import (
    GradingTestCase,
    grade_give,
    model_version_active_make,
    prediction_make,
    workbench_set,
)
from tests.visibility_probe import Scenario, mark_shown, probe_run


@pytest.mark.slow
class VisibilityProbeTests(GradingTestCase):
    def test_the_whole_matrix_shows_nothing_withheld_and_no_server_error(self):
        workbench_set(grades_required=2, blind_first_grader=True)
        root = User.objects.create_superuser("root", "root@example.org", "secret-pass-123")
        version = model_version_active_make()
        image_a, image_b = image_make(), image_make()
        grade_give(image_a, self.alice, 3, notes="probe-secret-alice-5d1")
        grade_give(image_b, self.bob, 1, notes="probe-secret-bob-7e2")
        prediction_make(
            image=image_a, version=version, probabilities=[0.0412, 0.0415, 0.6173, 0.25, 0.05]
        )
        prediction_make(
            image=image_b, version=version, probabilities=[0.1, 0.7319, 0.0681, 0.05, 0.05]
        )
        # Bob has seen the model's opinion of B: his correction is a request, with its reason.
        grade_give(image_b, self.bob, 2, correction_reason="probe-secret-bob-request-8f3")
        scenario = Scenario(
            users={
                "first reader": self.alice,
                "second reader": self.bob,
                "admin who grades": root,
                "reviewer": self.rita,
            },
            images={"A": image_a, "B": image_b},
            marks={
                "A": ("probe-secret-alice-5d1", "0.6173", "61.7", f"{image_a.pk}: 3 by alice"),
                "B": (
                    "probe-secret-bob-7e2",
                    "probe-secret-bob-request-8f3",
                    "0.7319",
                    "73.2",
                    f"{image_b.pk}: 1 by bob",
                ),
            },
            forbidden={
                "first reader": ("B",),
                "second reader": ("A",),
                "admin who grades": ("A", "B"),
                "reviewer": (),
            },
            expected={"first reader": ("A",), "second reader": ("B",), "reviewer": ("A", "B")},
        )
        report = probe_run(scenario)
        print(report.summary())
        self.assertGreater(report.requests, 300)
        # The marks are found where they may be seen: the probe would see a leak.
        self.assertEqual(
            report.shown,
            {("first reader", "A"), ("second reader", "B"), ("reviewer", "A"), ("reviewer", "B")},
        )
        self.assertEqual(report.server_errors, [])
        self.assertEqual(report.leaks, [])


def test_a_number_counts_as_shown_only_as_a_whole_number():
    assert mark_shown("0.6173", '{"probabilities": [0.0412, 0.6173, 0.25]}')
    assert mark_shown("61.7", "<td>61.7 %</td>")
    assert mark_shown("probe-secret-alice-5d1", "note: probe-secret-alice-5d1.")
    # A latency sum in /metrics is not image A's probability.
    assert not mark_shown("0.6173", "django_http_requests_latency_seconds_sum 10.61731")
    assert not mark_shown("61.7", "process_resident_memory_bytes 161.75")
