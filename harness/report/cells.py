"""The report's cells as text, shared by report.md and report.html: a figure at four significant
digits with its stderr and documents, the headers and rows of the table and of each group's table,
and the notes on what the table stands on.
"""

from __future__ import annotations

import time

from harness.record.metrics import lower_is_better
from harness.report.runs import Collection
from harness.report.table import FIGURES, Cell, GroupPart, Table


def number(value: float | None) -> str:
    """A figure as Markdown and HTML show it: four significant digits, ``-`` when unknown."""
    return "-" if value is None else f"{value:.4g}"


def cell_text(cell: Cell) -> str:
    """A dataset's cell: ``0.225 ± 0.0298 (n=200)``, ``FAILED``, or ``-`` when not run or not
    logged; ``(n=...)`` the documents the figure stands on, where recorded."""
    if cell.status not in ("FINISHED", "missing") and cell.value is None:
        return cell.status
    if cell.value is None:
        return "-"
    text = number(cell.value)
    text = f"{text} ± {number(cell.stderr)}" if cell.stderr is not None else text
    return f"{text} (n={cell.documents})" if cell.documents is not None else text


def has_variant(table: Table) -> bool:
    """Whether any row has a variant (the column is shown only then)."""
    return any(r.run.variant for r in table.rows)


def text_columns(table: Table) -> int:
    """How many leading columns are text (left-aligned): #, model, strategy, variant, status."""
    return 5 if has_variant(table) else 4


def headers(table: Table) -> list[str]:
    """The Markdown/HTML column headers (``#``: the run's number in the chart)."""
    datasets = [f"{ds} {table.metrics.get(ds, '-')}" for ds in table.datasets]
    variant = ["variant"] if has_variant(table) else []
    head = ["#", "model", "strategy", *variant, "status", *datasets]
    return [*head, *(FIGURES[k] for k in table.figures)]


def rows(table: Table) -> list[list[str]]:
    """The Markdown/HTML cells, row by row."""
    return [
        [
            str(i + 1),
            row.run.model,
            row.run.strategy,
            *([row.run.variant or "-"] if has_variant(table) else []),
            row.run.status,
            *(cell_text(row.cells[ds]) for ds in table.datasets),
            *(number(row.figures[k]) for k in table.figures),
        ]
        for i, row in enumerate(table.rows)
    ]


def member_headers(table: Table) -> list[str]:
    """The headers of a group's table: the member, its headline metric, one column per run."""
    return [
        "subgroup / subtask",
        "metric",
        *(f"{i + 1} {row.run.label}" for i, row in enumerate(table.rows)),
    ]


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
