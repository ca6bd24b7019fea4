"""The report's files: report.md, report.csv, report.html (self-contained) and chart.png.

The CSV holds every figure at full precision (``repr`` of the float MLflow returned); Markdown
and HTML show four significant digits. A group dataset's subgroups and subtasks are CSV columns
``<dataset>/<member>/<metric>`` after the group's own, a table per group in Markdown, and in the
HTML a table per group that opens on demand (``<details>``).
"""

from __future__ import annotations

import base64
import csv
import html
import io
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from harness.record.groups import member_key
from harness.record.metrics import lower_is_better, stderr_name
from harness.report.collect import Collection
from harness.report.table import FIGURES, Cell, GroupPart, Table, metric_title

log = logging.getLogger(__name__)


@dataclass
class Written:
    """The files one report wrote."""

    markdown: Path
    """report.md."""
    csv: Path
    """report.csv."""
    html: Path
    """report.html: the table, the notes and the chart inline."""
    chart: Path | None
    """chart.png; None when it could not be drawn (the other files are written anyway)."""
    table_markdown: str
    """The Markdown table alone, as printed."""


def number(value: float | None) -> str:
    """A figure as Markdown and HTML show it: four significant digits, ``-`` when unknown."""
    return "-" if value is None else f"{value:.4g}"


def cell_text(cell: Cell) -> str:
    """A dataset's cell: ``0.225 ± 0.0298``, ``FAILED``, or ``-`` when not run or not logged."""
    if cell.status not in ("FINISHED", "missing") and cell.value is None:
        return cell.status
    if cell.value is None:
        return "-"
    text = number(cell.value)
    return f"{text} ± {number(cell.stderr)}" if cell.stderr is not None else text


def headers(table: Table) -> list[str]:
    """The Markdown/HTML column headers."""
    datasets = [f"{ds} {table.metrics.get(ds, '-')}" for ds in table.datasets]
    variant = ["variant"] if any(r.run.variant for r in table.rows) else []
    head = ["model", "strategy", *variant, "status", *datasets]
    return [*head, *(FIGURES[k] for k in table.figures)]


def rows(table: Table) -> list[list[str]]:
    """The Markdown/HTML cells, row by row."""
    return [
        [
            row.run.model,
            row.run.strategy,
            *([row.run.variant or "-"] if any(r.run.variant for r in table.rows) else []),
            row.run.status,
            *(cell_text(row.cells[ds]) for ds in table.datasets),
            *(number(row.figures[k]) for k in table.figures),
        ]
        for row in table.rows
    ]


def member_headers(table: Table) -> list[str]:
    """The headers of a group's table: the member, its headline metric, one column per run."""
    return ["subgroup / subtask", "metric", *(row.run.label for row in table.rows)]


def member_rows(table: Table, dataset: str) -> list[list[str]]:
    """A group's table, one row per subgroup and subtask (a subgroup's members after it, marked
    ``· `` once per level below the group's direct members)."""
    part = table.groups[dataset]
    return [
        [
            "· " * (m.depth - 1) + m.name,
            part.metrics.get(m.name, "-"),
            *(cell_text(row.members[dataset][m.name]) for row in table.rows),
        ]
        for m in part.members
    ]


def group_title(dataset: str, part: GroupPart) -> str:
    """``synth_suite (lm-eval group): 3 subtasks in 1 subgroup``."""
    return f"{dataset} (lm-eval group): {part.summary}"


def _markdown_line(cells: list[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def to_markdown_groups(table: Table) -> list[str]:
    """Each group dataset's subgroups and subtasks: a heading and a table."""
    parts: list[str] = []
    for ds, part in table.groups.items():
        head = member_headers(table)
        align = ["---", "---"] + ["---:"] * (len(head) - 2)
        lines = [_markdown_line(r) for r in member_rows(table, ds)]
        parts += [f"## {group_title(ds, part)}", "", _markdown_line(head), _markdown_line(align)]
        parts += [*lines, ""]
    return parts


def to_markdown_table(table: Table) -> str:
    """The table alone, as GitHub-flavoured Markdown (numbers right-aligned)."""

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    head = headers(table)
    texts = 4 if "variant" in head else 3
    align = ["---"] * texts + ["---:"] * (len(head) - texts)
    return "\n".join([line(head), line(align), *(line(r) for r in rows(table))])


def to_csv(table: Table) -> str:
    """One row per run; a column per dataset's headline metric and its stderr, full precision."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    metric_cols: list[tuple[str, str | None, str]] = []  # dataset, member (None: its own), metric
    for ds in table.datasets:
        metric = table.metrics.get(ds)
        if metric:
            metric_cols += [(ds, None, metric), (ds, None, stderr_name(metric))]
        part = table.groups.get(ds)
        heads = part.metrics if part else {}
        for name in [p.name for p in part.members] if part else []:
            if head := heads.get(name):
                metric_cols += [(ds, name, head), (ds, name, stderr_name(head))]
    writer.writerow(
        [
            "model",
            "strategy",
            "variant",
            "status",
            "run_id",
            "older_runs",
            *(
                f"{ds}/{metric}" if member is None else f"{ds}/{member}/{metric}"
                for ds, member, metric in metric_cols
            ),
            *table.figures,
        ]
    )
    for row in table.rows:
        values = []
        for ds, member, metric in metric_cols:
            d = row.run.datasets.get(ds)
            key = metric if member is None else member_key(member, metric)
            value = d.metrics.get(key) if d is not None else None
            values.append("" if value is None else repr(value))
        figures = ["" if row.figures[k] is None else repr(row.figures[k]) for k in table.figures]
        run = row.run
        writer.writerow(
            [
                run.model,
                run.strategy,
                run.variant,
                run.status,
                run.run_id,
                len(run.older),
                *values,
                *figures,
            ]
        )
    return out.getvalue()


def notes(collection: Collection, table: Table) -> list[str]:
    """What the table stands on: which run each row is, what was left out, how figures are made."""
    lines = []
    for row in table.rows:
        run = row.run
        started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(run.start_time / 1000))
        line = f"{run.label}: run {run.run_id} ({run.status}, started {started})"
        if run.older:
            line += (
                f"; the latest ended run of {len(run.older) + 1} of this same evaluation (model, "
                f"strategy, checkpoint, datasets' fingerprints), older not shown: "
                f"{', '.join(run.older)}"
            )
        lines.append(line)
    lines += collection.notes
    lower = [ds for ds, m in table.metrics.items() if lower_is_better(m)]
    lines.append(
        "Each dataset's cell is its headline metric (acc, exact_match, ... as lm-eval names it) "
        "± lm-eval's stderr where it has one"
        + (f"; lower is better for {', '.join(lower)}" if lower else "")
        + ". req/s and tok/s: requests and tokens over the evaluation time of the finished "
        "datasets. load s, total s: the run's model load and whole run."
    )
    if table.groups:
        lines.append(
            f"{', '.join(table.groups)}: lm-eval group(s); the cell is the group's own figure as "
            "lm-eval aggregates it; each subgroup's and subtask's headline follows in a table of "
            "its own (report.csv: columns <dataset>/<member>/<metric>)."
        )
    if "energy_j" in table.figures:
        lines.append(
            "energy J: every GPU, the load and each dataset; peak GiB: any GPU, any phase."
        )
    return lines


def to_markdown(collection: Collection, table: Table, chart: Path | None) -> str:
    """report.md: a title, the store, the table, the notes and a link to chart.png."""
    title = f"# Comparison report: experiment `{collection.experiment}`"
    where = (
        f"Store: `{collection.uri}`, {len(table.rows)} run(s), {len(table.datasets)} dataset(s)."
    )
    parts = [title, "", where, "", to_markdown_table(table), "", *to_markdown_groups(table)]
    parts += [f"- {n}" for n in notes(collection, table)]
    if chart is not None:
        parts += ["", f"![headline metric per dataset]({chart.name})"]
    return "\n".join(parts) + "\n"


_CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em; color: #1d1d1f; }
h1 { font-size: 1.4em; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 4px 10px; }
th { background: #f2f4f7; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.failed { color: #b00020; }
details.group { margin: 0.5em 0; }
details.group summary { cursor: pointer; font-weight: 600; }
tr.subgroup td:first-child { font-weight: 600; }
img { max-width: 100%; border: 1px solid #eee; }
code { background: #f5f5f5; padding: 0 3px; }
"""


def to_html(collection: Collection, table: Table, chart: Path | None) -> str:
    """One page, no outside resource: the CSS inline and the chart as a data: URI."""
    esc = html.escape
    head = "".join(f"<th>{esc(h)}</th>" for h in headers(table))
    body = []
    for cells in rows(table):
        tds = [f"<td>{esc(c)}</td>" for c in cells[:3]]
        for c in cells[3:]:
            cls = "num failed" if c in ("FAILED", "KILLED") else "num"
            tds.append(f'<td class="{cls}">{esc(c)}</td>')
        body.append(f"<tr>{''.join(tds)}</tr>")
    items = "".join(f"<li>{esc(n)}</li>" for n in notes(collection, table))
    groups = "\n".join(_html_group(table, ds) for ds in table.groups)
    img = ""
    if chart is not None:
        data = base64.b64encode(chart.read_bytes()).decode("ascii")
        img = (
            f'<img id="chart" alt="headline metric per dataset" src="data:image/png;base64,{data}">'
        )
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>harness report: {esc(collection.experiment)}</title>
<style>{_CSS}</style>
</head>
<body>
<h1>Comparison report: experiment <code>{esc(collection.experiment)}</code></h1>
<p>Store: <code>{esc(collection.uri)}</code>, {len(table.rows)} run(s), \
{len(table.datasets)} dataset(s).</p>
<table id="report">
<thead><tr>{head}</tr></thead>
<tbody>
{chr(10).join(body)}
</tbody>
</table>
{groups}
<ul>{items}</ul>
{img}
</body>
</html>
"""


def _html_group(table: Table, dataset: str) -> str:
    """A group's table inside ``<details>``: closed until asked for."""
    esc = html.escape
    part = table.groups[dataset]
    head = "".join(f"<th>{esc(h)}</th>" for h in member_headers(table))
    body = []
    for m, cells in zip(part.members, member_rows(table, dataset), strict=True):
        indent = f' style="padding-left: {0.6 + 1.4 * (m.depth - 1):.1f}em"'
        name = f"<td{indent}>{esc(m.name)}</td><td>{esc(cells[1])}</td>"
        tds = "".join(
            f'<td class="{"num failed" if c in ("FAILED", "KILLED") else "num"}">{esc(c)}</td>'
            for c in cells[2:]
        )
        kind = "subgroup" if m.is_group else "subtask"
        body.append(f'<tr class="{kind}" data-depth="{m.depth}">{name}{tds}</tr>')
    return (
        f'<details class="group" id="group-{esc(dataset)}">'
        f"<summary>{esc(group_title(dataset, part))}</summary>\n"
        f'<table class="members">\n<thead><tr>{head}</tr></thead>\n<tbody>\n'
        + "\n".join(body)
        + "\n</tbody>\n</table>\n</details>"
    )


def draw_chart(table: Table, path: Path) -> Path | None:
    """Grouped bars: one panel per dataset (each its own scale), one bar per run, stderr as error
    bars. None (with a warning) when matplotlib cannot draw it or nothing has a value."""
    plotted = [ds for ds in table.datasets if ds in table.metrics]
    if not plotted or not table.rows:
        return None
    try:
        from matplotlib.figure import Figure
        from matplotlib.patches import Patch

        cols = min(len(plotted), 4)
        nrows = -(-len(plotted) // cols)
        fig = Figure(figsize=(3.2 * cols + 1, 3.0 * nrows + 0.8), layout="constrained")
        axes = fig.subplots(nrows, cols, squeeze=False).flatten()
        colors = [f"C{i % 10}" for i in range(len(table.rows))]
        labels = [r.run.label for r in table.rows]
        for ax, ds in zip(axes, plotted, strict=False):
            cells = [row.cells[ds] for row in table.rows]
            xs = list(range(len(cells)))
            heights = [c.value if c.value is not None else 0.0 for c in cells]
            errors = [c.stderr if c.stderr is not None else 0.0 for c in cells]
            bars = ax.bar(xs, heights, yerr=errors, color=colors, capsize=3)
            for bar, c in zip(bars, cells, strict=True):
                if c.value is None:
                    ax.annotate("n/a", (bar.get_x() + bar.get_width() / 2, 0), ha="center")
            ax.set_title(f"{ds}\n{metric_title(table.metrics[ds])}", fontsize=9)
            ax.set_xticks([])
        for ax in axes[len(plotted) :]:
            ax.set_visible(False)
        fig.legend(
            handles=[Patch(color=c, label=label) for c, label in zip(colors, labels, strict=True)],
            loc="outside lower center",
            ncols=min(len(labels), 4),
            fontsize=8,
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100)
        return path
    except Exception as err:  # the chart is optional: the table files are written regardless
        log.warning("report chart not drawn (%s: %s)", type(err).__name__, err)
        return None


def write(collection: Collection, table: Table, out: Path) -> Written:
    """Write chart.png, report.md, report.csv and report.html into ``out``."""
    from harness.record.files import write_text_atomic

    out.mkdir(parents=True, exist_ok=True)
    chart = draw_chart(table, out / "chart.png")
    md, csv_path, html_path = out / "report.md", out / "report.csv", out / "report.html"
    write_text_atomic(md, to_markdown(collection, table, chart))
    write_text_atomic(csv_path, to_csv(table))
    write_text_atomic(html_path, to_html(collection, table, chart))
    return Written(md, csv_path, html_path, chart, to_markdown_table(table))
