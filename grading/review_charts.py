"""Server-rendered PNG charts for the review pages (matplotlib's object API on the Agg canvas).

``matplotlib.figure.Figure`` is used directly rather than pyplot: pyplot keeps global state that is not
safe across the threads of a web server. matplotlib is imported lazily so pages that draw nothing do
not pay for it.
"""

from __future__ import annotations

import datetime as dt
import io
import math
from collections.abc import Sequence

from grading.selectors.review import MONTH_MIN_IMAGES, VersionSeries


def _png(figure) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return buffer.getvalue()


def confusion_png(*, matrix: Sequence[Sequence[int]], labels: Sequence[str]) -> bytes:
    """Counts, coloured by the share of each confirmed grade (row) predicted as each grade."""
    import numpy as np
    from matplotlib.figure import Figure

    counts = np.asarray(matrix, dtype=float)
    row_totals = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, row_totals, out=np.zeros_like(counts), where=row_totals > 0)
    size = 1.1 + 0.75 * len(labels)
    figure = Figure(figsize=(size + 1.4, size))
    axes = figure.add_subplot()
    axes.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    ticks = range(len(labels))
    axes.set_xticks(ticks, labels=labels, rotation=30, ha="right", fontsize=8)
    axes.set_yticks(ticks, labels=labels, fontsize=8)
    axes.set_xlabel("Predicted grade")
    axes.set_ylabel("Confirmed grade")
    for i in ticks:
        for j in ticks:
            axes.text(
                j,
                i,
                f"{int(counts[i, j])}",
                ha="center",
                va="center",
                fontsize=9,
                color="white" if shares[i, j] > 0.55 else "#1c2430",
            )
    axes.set_title("Confusion matrix (colour: share of the confirmed grade)", fontsize=9)
    return _png(figure)


VERSION_MARKERS = (("o", "-"), ("s", "--"), ("^", "-."), ("D", ":"), ("v", "-"), ("P", "--"))


def qwk_by_month_png(*, series: Sequence[VersionSeries]) -> bytes:
    """One line per model version: QWK against the confirmed grades, month by month. Months with
    fewer than MONTH_MIN_IMAGES images are drawn hollow (too few to trust)."""
    return _png(qwk_by_month_figure(series=series))


def qwk_by_month_figure(*, series: Sequence[VersionSeries]):
    from matplotlib.dates import DateFormatter, MonthLocator, date2num
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7.5, 3.2))
    axes = figure.add_subplot()
    for index, entry in enumerate(series):
        # Dates as matplotlib's day numbers, as its date converter would make them.
        days = date2num([point.month for point in entry.points])
        values = [point.qwk for point in entry.points]
        # Each version has its own marker and dash as well as its colour: colour alone is not
        # enough to tell the lines apart (WCAG 1.4.1).
        marker, dashes = VERSION_MARKERS[index % len(VERSION_MARKERS)]
        (line,) = axes.plot(
            days,
            values,
            dashes,
            linewidth=1.6,
            marker=marker,
            markevery=[],  # the markers are drawn per point below; the legend shows this one
            label=entry.model_version.name,
        )
        for point in entry.points:
            axes.plot(
                [date2num(point.month)],
                [point.qwk],
                marker,
                color=line.get_color(),
                markerfacecolor=line.get_color() if point.is_reliable else "white",
                markersize=6,
            )
    # A margin beyond the lowest and highest QWK, so that no marker sits half outside the axes.
    values = [p.qwk for s in series for p in s.points]
    axes.set_ylim(min([-0.05, *values]) - 0.08, max([1.0, *values]) + 0.08)
    axes.set_ylabel("QWK vs confirmed")
    # The axis spans the months that have data (half a month either side): left to itself,
    # matplotlib widens a single month to five years of overlapping month labels. One tick per
    # month, thinned to at most about twelve labels.
    months = sorted({point.month for entry in series for point in entry.points})
    if months:
        first, last = months[0], months[-1]
        axes.set_xlim(
            date2num(first - dt.timedelta(days=16)), date2num(last + dt.timedelta(days=16))
        )
        span = (last.year - first.year) * 12 + last.month - first.month + 1
        axes.xaxis.set_major_locator(MonthLocator(interval=max(1, math.ceil(span / 12))))
    else:
        axes.xaxis.set_major_locator(MonthLocator())
    axes.xaxis.set_major_formatter(DateFormatter("%Y-%m"))
    axes.grid(alpha=0.3)
    if series:
        # Beside the plot, not over it: a legend in a corner hid the points that fell there.
        axes.legend(
            fontsize=8,
            loc="upper left",
            bbox_to_anchor=(1.01, 1.0),
            title="Model version",
            title_fontsize=8,
        )
    else:
        axes.text(0.5, 0.5, "No compared predictions", ha="center", transform=axes.transAxes)
    axes.set_title(
        f"QWK per model version and month (hollow: fewer than {MONTH_MIN_IMAGES} images)",
        fontsize=9,
    )
    figure.autofmt_xdate()
    return figure
