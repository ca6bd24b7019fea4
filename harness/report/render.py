"""The report's files: report.md, report.csv, report.html (self-contained) and chart.png.

The CSV holds every figure at full precision (``repr`` of the float MLflow returned); Markdown
and HTML show four significant digits. A group dataset's subgroups and subtasks are CSV columns
``<dataset>/<member>/<metric>`` after the group's own, a table per group in Markdown, and in the
HTML a table per group that opens on demand (``<details>``).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

from harness.record.groups import member_key
from harness.record.metrics import stderr_name
from harness.report.cells import (
    group_title,
    headers,
    member_headers,
    member_rows,
    notes,
    rows,
    text_columns,
)
from harness.report.chart import draw_chart
from harness.report.page import to_html
from harness.report.runs import Collection
from harness.report.table import Row, Table

__all__ = ["Written", "to_csv", "to_html", "to_markdown", "to_markdown_table", "write"]


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
    texts = text_columns(table)
    align = ["---"] * texts + ["---:"] * (len(head) - texts)
    return "\n".join([line(head), line(align), *(line(r) for r in rows(table))])


def _csv_columns(table: Table) -> list[tuple[str, str | None, str]]:
    """(dataset, member or None for its own, metric or ``n``) of each figure column: every
    headline and its stderr, then every document count (``<dataset>/n``,
    ``<dataset>/<member>/n``)."""
    cols: list[tuple[str, str | None, str]] = []
    for ds in table.datasets:
        metric = table.metrics.get(ds)
        if metric:
            cols += [(ds, None, metric), (ds, None, stderr_name(metric))]
        part = table.groups.get(ds)
        for m in part.members if part else []:
            if head := part.metrics.get(m.name) if part else None:
                cols += [(ds, m.name, head), (ds, m.name, stderr_name(head))]
    return cols + [(ds, member, "n") for ds, member, metric in cols if "_stderr" not in metric]


def _csv_value(table: Table, row: Row, ds: str, member: str | None, metric: str) -> str:
    d = row.run.datasets.get(ds)
    if d is None:
        return ""
    if metric == "n":
        cell = row.cells[ds] if member is None else row.members[ds][member]
        return "" if cell.documents is None else str(cell.documents)
    value = d.metrics.get(metric if member is None else member_key(member, metric))
    return "" if value is None else repr(value)


def to_csv(table: Table) -> str:
    """One row per run; per dataset its headline metric, stderr and documents (``n``) at full
    precision; ``variant`` as the table shows it, ``settings`` every differing setting whole,
    ``checkpoint`` the resolved path the run loaded."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    cols = _csv_columns(table)
    head = ["key", "model", "strategy", "variant", "settings", "checkpoint", "checkpoint_hash"]
    head += ["status", "run_id", "older_runs"]
    names = [f"{ds}/{metric}" if m is None else f"{ds}/{m}/{metric}" for ds, m, metric in cols]
    writer.writerow([*head, *names, *table.figures])
    for i, row in enumerate(table.rows):
        run = row.run
        values = [_csv_value(table, row, ds, member, metric) for ds, member, metric in cols]
        figures = ["" if row.figures[k] is None else repr(row.figures[k]) for k in table.figures]
        named = [run.model, run.strategy, run.variant, run.full_variant, run.checkpoint]
        kept = [run.checkpoint_hash, run.status, run.run_id, len(run.older)]
        writer.writerow([i + 1, *named, *kept, *values, *figures])
    return out.getvalue()


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


def write(
    collection: Collection, table: Table, out: Path, compare_page: str | None = None
) -> Written:
    """Write chart.png, report.md, report.csv and report.html into ``out`` (``compare_page``:
    the sample-by-sample comparison written beside it, linked from the HTML)."""
    from harness.record.files import write_text_atomic

    out.mkdir(parents=True, exist_ok=True)
    chart = draw_chart(table, out / "chart.png")
    md, csv_path, html_path = out / "report.md", out / "report.csv", out / "report.html"
    write_text_atomic(md, to_markdown(collection, table, chart))
    write_text_atomic(csv_path, to_csv(table))
    write_text_atomic(html_path, to_html(collection, table, chart, compare_page))
    return Written(md, csv_path, html_path, chart, to_markdown_table(table))
