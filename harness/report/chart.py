"""chart.png: one panel per dataset (each its own scale), one bar per run, legible with many runs.

Each run has its own colour and its own marker (no palette repeats: ten colours, then twenty, then
as many as there are runs, evenly spread; a marker on top of every bar besides), and a number,
the same as the report table's ``#`` column, under its bar with the documents the figure stands
on. A real 0 is a marker on the baseline; a figure the run does not have is a hatched bar the
height of the panel marked ``n/a``, so the two never look alike. The legend (every run, with a
line for ``n/a``) sits below the panels, outside them, and the figure is as tall as it needs.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from harness.report.table import Table, metric_title

log = logging.getLogger(__name__)

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p")
"""One marker per run, in turn; with the colours every run is told apart twice."""

LEGEND_LABEL = 90
"""Characters of a run's label in the legend (the HTML's key and the table hold it whole)."""

MISSING_HATCH = "///"
_HANDLE = {"linestyle": "", "markersize": 7}


def run_colors(count: int) -> list[Any]:
    """``count`` distinct colours: matplotlib's tab10 up to 10, tab20 up to 20, then that many
    hues spread over a perceptual colour map."""
    from matplotlib import colormaps

    if count <= 10:
        return [colormaps["tab10"](i) for i in range(count)]
    if count <= 20:
        return [colormaps["tab20"](i) for i in range(count)]
    cmap = colormaps["turbo"]
    return [cmap(0.05 + 0.9 * i / (count - 1)) for i in range(count)]


def run_marker(index: int) -> str:
    return MARKERS[index % len(MARKERS)]


def legend_label(index: int, label: str) -> str:
    """``3  model/strategy [variant]``, cut to ``LEGEND_LABEL`` characters."""
    text = f"{index + 1}  {label}"
    return text if len(text) <= LEGEND_LABEL else text[: LEGEND_LABEL - 1] + "…"


def _panel(ax: Any, table: Table, ds: str, colors: list[Any]) -> None:
    """One dataset's bars, markers, ``n/a`` bars and run numbers with their documents."""
    cells = [row.cells[ds] for row in table.rows]
    xs = list(range(len(cells)))
    known = [c.value for c in cells if c.value is not None]
    for x, c, color in zip(xs, cells, colors, strict=True):
        if c.value is None:
            continue
        ax.bar(x, c.value, color=color, alpha=0.55, width=0.8, gid=f"value:{ds}:{x}")
        if c.stderr is not None:
            ax.errorbar(x, c.value, yerr=c.stderr, color="black", capsize=2, linewidth=0.8)
        ax.plot(x, c.value, marker=run_marker(x), color=color, markeredgecolor="black",
                markersize=6, linestyle="", gid=f"marker:{ds}:{x}")  # fmt: skip
    low, high = min([*known, 0.0]), max([*known, 0.0])
    span = (high - low) or 1.0
    ax.set_ylim(low - 0.04 * span, high + 0.12 * span)  # a marker at 0 shows whole
    ax.axhline(0, color="#555", linewidth=0.6)
    bottom, ceiling = ax.get_ylim()
    for x, c in zip(xs, cells, strict=True):
        if c.value is None:
            ax.bar(x, ceiling - bottom, bottom=bottom, width=0.8, fill=False,
                   hatch=MISSING_HATCH, edgecolor="#999", gid=f"missing:{ds}:{x}")  # fmt: skip
            ax.text(x, bottom + (ceiling - bottom) / 2, "n/a", rotation=90, ha="center",
                    va="center", fontsize=7, color="#555")  # fmt: skip
    ax.set_xticks(xs)
    ax.set_xticklabels(
        [f"{x + 1} n={c.documents}" if c.documents is not None else str(x + 1)
         for x, c in zip(xs, cells, strict=True)],
        rotation=90, fontsize=7,
    )  # fmt: skip
    ax.set_xlim(-0.7, len(cells) - 0.3)
    ax.set_title(f"{ds}\n{metric_title(table.metrics[ds])}", fontsize=9)


def chart_figure(table: Table) -> Any | None:
    """The chart as a matplotlib ``Figure`` (None when nothing has a headline metric); each
    bar, marker and ``n/a`` bar carries a gid ``value|marker|missing:<dataset>:<row>``."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    plotted = [ds for ds in table.datasets if ds in table.metrics]
    if not plotted or not table.rows:
        return None
    count = len(table.rows)
    cols = min(len(plotted), 4 if count <= 8 else 2 if count <= 20 else 1)
    nrows = -(-len(plotted) // cols)
    panel_w = max(3.2, 0.3 * count + 1.0)
    labels = [legend_label(i, r.run.label) for i, r in enumerate(table.rows)]
    widest = max(len(label) for label in labels)
    width = max(panel_w * cols + 0.6, 0.075 * widest + 1.2)
    legend_cols = max(1, min(count, int(width // (0.075 * widest + 0.8))))
    legend_rows = -(-(count + 1) // legend_cols)
    height = 3.4 * nrows + 0.25 * legend_rows + 0.8
    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(nrows, cols, squeeze=False).flatten()
    colors = run_colors(count)
    for ax, ds in zip(axes, plotted, strict=False):
        _panel(ax, table, ds, colors)
    for ax in axes[len(plotted) :]:
        ax.set_visible(False)
    handles: list[Any] = [
        Line2D(
            [],
            [],
            color=c,
            marker=run_marker(i),
            markeredgecolor="black",
            linestyle="",
            markersize=7,
            label=label,
        )
        for i, (c, label) in enumerate(zip(colors, labels, strict=True))
    ]
    handles.append(Patch(fill=False, hatch=MISSING_HATCH, edgecolor="#999", label="n/a: no figure"))
    fig.legend(handles=handles, loc="outside lower center", ncols=legend_cols, fontsize=8)
    return fig


def draw_chart(table: Table, path: Path) -> Path | None:
    """Write chart.png; None (with a warning) when matplotlib cannot draw it or nothing has a
    value (the table files are written regardless)."""
    try:
        fig = chart_figure(table)
        if fig is None:
            return None
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100, bbox_inches="tight", pad_inches=0.1)
        return path
    except Exception as err:  # the chart is optional: the table files are written regardless
        log.warning("report chart not drawn (%s: %s)", type(err).__name__, err)
        return None
