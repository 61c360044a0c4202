"""The QWK chart keeps every point in view: a single point at -0.125 was clipped at the bottom
edge, and the legend sat over the lower-left corner (issue 21)."""

from __future__ import annotations

import datetime as dt

from django.test import SimpleTestCase

from grading.models import ModelVersion
from grading.review_charts import qwk_by_month_figure
from grading.selectors.review import MonthPoint, VersionSeries


def marker_boxes(figure):
    """(marker bounding box in display pixels, axes box) of every point marker drawn."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure).draw()
    axes = figure.axes[0]
    boxes = []
    for line in axes.get_lines():
        if line.get_marker() in (None, "None", "") or line.get_markevery() == []:
            continue  # no marker drawn (a version's line; its markers are drawn one by one)
        radius = line.get_markersize() / 2 * figure.dpi / 72
        for x, y in zip(line.get_xdata(), line.get_ydata(), strict=True):
            px, py = axes.transData.transform((x, y))
            boxes.append((px - radius, py - radius, px + radius, py + radius))
    return boxes, axes.get_window_extent()


class QwkChartPointsTests(SimpleTestCase):
    def test_versions_differ_by_marker_and_dash_not_only_by_colour(self):
        series = [
            VersionSeries(
                model_version=ModelVersion(name=f"v{i}"),
                points=[MonthPoint(dt.date(2026, 11, 1), 40, 0.5 + i / 10, 0.5)],
            )
            for i in range(3)
        ]
        axes = qwk_by_month_figure(series=series).axes[0]
        handles = axes.get_legend().legend_handles
        styles = {(h.get_marker(), h.get_linestyle()) for h in handles}
        self.assertEqual(len(styles), 3)

    def test_every_marker_lies_inside_the_axes_and_outside_the_legend(self):
        versions = [ModelVersion(name="v1"), ModelVersion(name="v2")]
        series = [
            VersionSeries(
                model_version=versions[0],
                points=[MonthPoint(dt.date(2026, 11, 1), 40, -0.125, 0.3)],
            ),
            VersionSeries(
                model_version=versions[1],
                points=[
                    MonthPoint(dt.date(2026, 10, 1), 40, 1.0, 1.0),
                    MonthPoint(dt.date(2026, 11, 1), 40, 0.0, 0.2),
                ],
            ),
        ]
        figure = qwk_by_month_figure(series=series)
        boxes, frame = marker_boxes(figure)
        self.assertEqual(len(boxes), 3)
        legend = figure.axes[0].get_legend().get_window_extent()
        for x0, y0, x1, y1 in boxes:
            self.assertTrue(
                frame.x0 <= x0 and x1 <= frame.x1 and frame.y0 <= y0 and y1 <= frame.y1,
                ((x0, y0, x1, y1), frame),
            )
            overlaps = x0 < legend.x1 and legend.x0 < x1 and y0 < legend.y1 and legend.y0 < y1
            self.assertFalse(overlaps, "a point is under the legend")
