"""Review page fixes: the QWK-by-month chart's axis spans the data's months only, and the version
list names each version once."""

from __future__ import annotations

import datetime as dt

from django.test import SimpleTestCase

from grading.models import ModelVersion
from grading.review_charts import qwk_by_month_figure
from grading.selectors.review import MonthPoint, VersionSeries
from tests.base import BaseTestCase
from tests.factories_review import at, images_bulk_make, model_version_make, prediction_make


def series_over(months: list[dt.date]) -> list[VersionSeries]:
    version = ModelVersion(name="v1")
    return [
        VersionSeries(model_version=version, points=[MonthPoint(m, 40, 0.8, 0.7) for m in months])
    ]


def tick_dates(figure) -> list[dt.date]:
    from matplotlib.dates import num2date

    axes = figure.axes[0]
    low, high = axes.get_xlim()
    return [num2date(t).date() for t in axes.get_xticks() if low <= t <= high]


class QwkChartAxisTests(SimpleTestCase):
    def test_one_month_of_data_gets_one_month_on_the_axis(self):
        figure = qwk_by_month_figure(series=series_over([dt.date(2026, 11, 1)]))
        self.assertEqual(tick_dates(figure), [dt.date(2026, 11, 1)])

    def test_three_years_of_data_get_at_most_about_twelve_labels(self):
        months = [dt.date(2024 + (i // 12), 1 + i % 12, 1) for i in range(36)]
        ticks = tick_dates(qwk_by_month_figure(series=series_over(months)))
        self.assertLessEqual(len(ticks), 13)
        self.assertGreaterEqual(len(ticks), 6)
        self.assertGreaterEqual(ticks[0], months[0])
        self.assertLessEqual(ticks[-1], months[-1])


class VersionListTests(BaseTestCase):
    def test_each_version_is_listed_once_with_the_default_selected(self):
        active = model_version_make("v1", state=ModelVersion.State.ACTIVE)
        candidate = model_version_make("v2")
        for version in (active, candidate):
            image = images_bulk_make(1, confirmed_grades=[1])[0]
            prediction_make(image=image, model_version=version, grade=1, created=at(3))
        self.login(self.rita)
        response = self.client.get("/review/")
        html = response.content.decode()
        select = html[
            html.index('id="id_version"') : html.index("</select>", html.index('id="id_version"'))
        ]
        self.assertEqual(select.count("<option"), 2)
        self.assertNotIn("(default)", select)
        self.assertInHTML(f'<option value="{active.pk}" selected>v1 (active)</option>', select)
        self.assertEqual(response.context["filters"].model_version, active)
        other = self.client.get("/review/", {"version": candidate.pk})
        self.assertEqual(other.context["filters"].model_version, candidate)
