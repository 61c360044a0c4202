"""Intervals print as "[-0.134, -0.005]": a dash between negative bounds read "-0.134–-0.005"."""

from __future__ import annotations

from django.template import Context, Template
from django.test import SimpleTestCase

from grading.templatetags.model_metrics import interval


class IntervalFormatTests(SimpleTestCase):
    def test_negative_bounds_print_in_brackets(self):
        self.assertEqual(interval([-0.1342, -0.0049]), "[-0.134, -0.005]")

    def test_percent_intervals_too(self):
        self.assertEqual(interval([0.801, 0.846], "percent"), "[80.1, 84.6] %")

    def test_no_interval_prints_nothing(self):
        self.assertEqual(interval(None), "")

    def test_the_review_pages_metrics_use_it(self):
        html = Template("{% include 'grading/review/_results.html' %}").render(
            Context(
                {
                    "filters": type(
                        "F", (), {"model_version": object(), "include_training": True}
                    )(),
                    "report": {"n": 5, "qwk": -0.07, "intervals": {"qwk": (-0.1342, -0.0049)}},
                    "not_compared": {"abstained": 0, "comparable": 5},
                }
            )
        )
        self.assertIn("95 % CI [-0.134, -0.005]", html)
