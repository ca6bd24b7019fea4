"""report.html: one self-contained page (CSS inline, the chart as a data: URI).

A row's variant shows shortened, its full settings one click away (``<details>``, and as the
cell's title); below the chart a key gives each run's number, colour and marker as the chart
draws them, with its whole label, so the chart stays readable with any number of runs.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

from harness.report.cells import (
    group_title,
    headers,
    member_headers,
    member_rows,
    notes,
    rows,
    text_columns,
)
from harness.report.runs import Collection
from harness.report.table import Table

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
td.variant { max-width: 32em; }
td.variant summary { cursor: pointer; }
td.variant .full { font-size: 0.85em; word-break: break-all; }
table.key .mark { font-size: 1.2em; text-align: center; }
code { background: #f5f5f5; padding: 0 3px; }
"""


def to_html(
    collection: Collection, table: Table, chart: Path | None, compare_page: str | None = None
) -> str:
    """One page, no outside resource: the CSS inline and the chart as a data: URI."""
    esc = html.escape
    names = headers(table)
    head = "".join(f"<th>{esc(h)}</th>" for h in names)
    texts = text_columns(table)
    body = []
    for row, cells in zip(table.rows, rows(table), strict=True):
        tds = []
        for name, c in zip(names[:texts], cells[:texts], strict=True):
            tds.append(_variant_cell(c, row.run.full_variant) if name == "variant" else
                       f"<td>{esc(c)}</td>")  # fmt: skip
        for c in cells[texts:]:
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
{_compare_link(compare_page)}
<table id="report">
<thead><tr>{head}</tr></thead>
<tbody>
{chr(10).join(body)}
</tbody>
</table>
{groups}
<ul>{items}</ul>
{img}
{_key(table) if img else ""}
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


def _variant_cell(short: str, full: str) -> str:
    """The variant as the table shows it; the full settings one click away and as its title."""
    esc = html.escape
    if not full or full == short:
        return f'<td class="variant">{esc(short)}</td>'
    return (
        f'<td class="variant" title="{esc(full)}"><details><summary>{esc(short)}</summary>'
        f'<div class="full">{esc(full)}</div></details></td>'
    )


MARKER_SIGNS = dict(zip("os^Dv" + "PX*<>hp", "●■▲◆▼✚✖★◀▶⬢⬟", strict=True))
"""The chart's markers as characters, for the key."""


def _key(table: Table) -> str:
    """The chart's key: each run's number, colour and marker as drawn, and its whole label."""
    from matplotlib.colors import to_hex

    from harness.report.chart import run_colors, run_marker

    esc = html.escape
    colors = run_colors(len(table.rows))
    lines = []
    for i, (row, color) in enumerate(zip(table.rows, colors, strict=True)):
        sign = MARKER_SIGNS.get(run_marker(i), "●")
        lines.append(
            f'<tr data-run="{esc(row.run.run_id)}"><td>{i + 1}</td>'
            f'<td class="mark" style="color: {to_hex(color)}">{sign}</td>'
            f"<td>{esc(row.run.label)}</td></tr>"
        )
    return (
        '<table class="key" id="chart-key">\n<thead><tr><th>#</th><th>in the chart</th>'
        "<th>run</th></tr></thead>\n<tbody>\n" + "\n".join(lines) + "\n</tbody>\n</table>"
    )


def _compare_link(page: str | None) -> str:
    """The link to the sample-by-sample comparison written beside this report, if any."""
    if page is None:
        return ""
    return (
        f'<p id="compare-link">Sample by sample (paired tests, flipped questions): '
        f'<a href="{html.escape(page)}">{html.escape(page)}</a></p>'
    )
