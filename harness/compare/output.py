"""A comparison written out: compare.json (the contract scripts and CI read), compare.md and
compare.html (the same rows to read, each row's flipped samples listed), and the console's
lines."""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.record.files import write_text_atomic

SHOWN_FLIPS = 50
"""Flipped samples of a row compare.md lists (compare.json and compare.html list all)."""


@dataclass(frozen=True)
class Written:
    """The files of a comparison."""

    json: Path
    """compare.json."""
    markdown: Path
    """compare.md."""
    html: Path
    """compare.html."""


def _num(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def _signed(value: Any) -> str:
    return "-" if value is None else f"{value:+.4g}"


def _names(document: dict[str, Any]) -> dict[str, str]:
    return {c["run_id"]: c["name"] for c in document["candidates"]}


HEADER = (
    "candidate",
    "dataset",
    "subtask",
    "metric",
    "shared",
    "baseline",
    "candidate value",
    "difference [CI]",
    "p (Holm)",
    "flips +/-",
    "verdict",
    "Δ tok/s",
    "Δ energy J",
    "Δ peak GiB",
)


def table_rows(document: dict[str, Any]) -> list[list[str]]:
    """The rows as cells (the console, compare.md and compare.html show the same)."""
    names = _names(document)
    cells = []
    for row in document["rows"]:
        cost = row.get("cost") or {}
        interval = (
            f" [{_signed(row['ci_low'])}, {_signed(row['ci_high'])}]"
            if row["ci_low"] is not None
            else ""
        )
        flips = (
            "-" if row["flips_better"] is None else f"+{row['flips_better']}/-{row['flips_worse']}"
        )
        cells.append(
            [
                names.get(row["candidate"], row["candidate"]),
                row["dataset"],
                row["subtask"] or "",
                row["metric"],
                str(row["shared"]),
                _num(row["baseline"]),
                _num(row["candidate_value"]),
                _signed(row["difference"]) + interval,
                f"{_num(row['p_value'], 3)} ({_num(row['p_value_holm'], 3)})",
                flips,
                row["verdict"].upper() if row["subtask"] is None else row["verdict"],
                *(
                    _signed((cost.get(k) or {}).get("difference"))
                    for k in ("tokens_per_s", "energy_j", "peak_memory_gib")
                ),
            ]
        )
    return cells


def exclusions(document: dict[str, Any]) -> list[str]:
    """One line per dataset row: how many samples were shared and why others were not."""
    from harness.compare.join import REASONS

    names = _names(document)
    lines = []
    for row in document["rows"]:
        if row["subtask"] is not None:
            continue
        left = row.get("excluded") or {}
        why = "; ".join(f"{n} {k} ({REASONS[k]})" for k, n in left.items())
        lines.append(
            f"{names.get(row['candidate'], row['candidate'])} / {row['dataset']}: "
            f"{row['shared']} samples shared" + (f", left out: {why}" if why else ", none left out")
        )
    return lines


def markdown(document: dict[str, Any]) -> str:
    """compare.md."""
    base = document["baseline"]
    lines = [
        f"# Comparison against {base['name']} ({base['run_id']})",
        "",
        f"Verdict: **{document['verdict']}** (exit code {document['exit_code']}); "
        f"settings: {json.dumps(document['settings'])}",
        "",
    ]
    lines += ["| " + " | ".join(HEADER) + " |", "|" + " --- |" * len(HEADER)]
    lines += [
        "| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in table_rows(document)
    ]
    lines += ["", *(f"- {line}" for line in exclusions(document))]
    lines += [f"- note: {n}" for n in document["notes"]]
    for row in document["rows"]:
        if not row["flipped"]:
            continue
        where = f"{row['dataset']}" + (f" / {row['subtask']}" if row["subtask"] else "")
        lines += [
            "",
            f"## Flipped: {where} ({row['candidate']})",
            "",
            "| direction | task | doc_id | prompt | baseline answer | candidate answer |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for f in row["flipped"][:SHOWN_FLIPS]:
            cells = [
                f["direction"],
                f["task"],
                str(f["doc_id"]),
                f["prompt"],
                f["baseline_answer"],
                f["candidate_answer"],
            ]
            lines.append("| " + " | ".join(_md_cell(c) for c in cells) + " |")
        if len(row["flipped"]) > SHOWN_FLIPS:
            lines.append(f"\n({len(row['flipped']) - SHOWN_FLIPS} more in compare.json)")
    return "\n".join(lines) + "\n"


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", "⏎")


def html_page(document: dict[str, Any], report_page: bool = False) -> str:
    """compare.html: the table, each row's flipped samples one click away."""
    esc = html.escape
    base = document["baseline"]
    head = "".join(f"<th>{esc(h)}</th>" for h in HEADER)
    body = []
    for index, (row, cells) in enumerate(zip(document["rows"], table_rows(document), strict=True)):
        tds = "".join(f"<td>{esc(c)}</td>" for c in cells)
        link = f'<td><a href="#flips-{index}">flipped</a></td>' if row["flipped"] else "<td></td>"
        body.append(f'<tr class="{esc(row["verdict"])}">{tds}{link}</tr>')
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>harness comparison</title>",
        "<style>body{font-family:sans-serif}td,th{border:1px solid #ccc;padding:2px 6px}"
        "table{border-collapse:collapse}tr.worse{background:#fdd}tr.better{background:#dfd}"
        "</style></head><body>",
        f"<h1>Comparison against {esc(base['name'])} <code>{esc(base['run_id'])}</code></h1>",
        f"<p>Verdict: <b>{esc(document['verdict'])}</b> (exit code {document['exit_code']})</p>",
        (
            '<p id="report-link">The same runs side by side: '
            '<a href="report.html">report.html</a></p>'
            if report_page
            else ""
        ),
        f"<table><tr>{head}<th></th></tr>{''.join(body)}</table>",
        "<ul>" + "".join(f"<li>{esc(x)}</li>" for x in exclusions(document)) + "</ul>",
    ]
    for index, row in enumerate(document["rows"]):
        if not row["flipped"]:
            continue
        where = row["dataset"] + (f" / {row['subtask']}" if row["subtask"] else "")
        items = "".join(
            f"<tr><td>{esc(f['direction'])}</td><td>{esc(f['task'])}</td>"
            f"<td>{esc(str(f['doc_id']))}</td><td><code>{esc(f['prompt'])}</code></td>"
            f"<td>{esc(f['baseline_answer'])}</td><td>{esc(f['candidate_answer'])}</td></tr>"
            for f in row["flipped"]
        )
        parts.append(
            f'<details id="flips-{index}"><summary>Flipped: {esc(where)} '
            f"({len(row['flipped'])})</summary><table><tr><th>direction</th><th>task</th>"
            "<th>doc_id</th><th>prompt</th><th>baseline answer</th><th>candidate answer</th>"
            f"</tr>{items}</table></details>"
        )
    parts.append("</body></html>")
    return "\n".join(parts)


def write(document: dict[str, Any], out: Path) -> Written:
    """compare.json, compare.md and compare.html into ``out``."""
    written = Written(out / "compare.json", out / "compare.md", out / "compare.html")
    write_text_atomic(written.json, json.dumps(document, indent=1, default=str) + "\n")
    write_text_atomic(written.markdown, markdown(document))
    write_text_atomic(written.html, html_page(document, (out / "report.html").exists()))
    return written


def console_lines(document: dict[str, Any]) -> list[str]:
    """What the command prints: the table (plain text), the exclusions and the verdict."""
    rows = table_rows(document)
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(HEADER)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*HEADER), *(fmt.format(*r) for r in rows), *exclusions(document)]
    lines += [f"note: {n}" for n in document["notes"]]
    return lines
