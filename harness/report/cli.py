"""``python -m harness.report``: the command line of the comparison report."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from harness.errors import HarnessError


def _names(value: str) -> list[str]:
    return [v for v in value.split(",") if v]


def add_cli_args(parser: argparse.ArgumentParser) -> None:
    """The report's options: where to read, which runs, where to write."""
    parser.add_argument(
        "--tracking-uri",
        help="MLflow store to read: sqlite:///PATH, a folder or http://HOST:PORT "
        "(default: the local store of the default config, sqlite:///outputs/mlflow.db)",
    )
    parser.add_argument(
        "--experiment", help="MLflow experiment (default: the default config's, harness)"
    )
    parser.add_argument(
        "--model", type=_names, action="extend", help="only these models (comma-separated)"
    )
    parser.add_argument(
        "--strategy", type=_names, action="extend", help="only these strategies (comma-separated)"
    )
    parser.add_argument(
        "--runs",
        nargs="+",
        metavar="RUN_ID",
        help="exactly these parent runs, one row each (default: the latest FINISHED or FAILED "
        "run of each evaluation: model, strategy, checkpoint and datasets' fingerprints)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="folder for report.md/.csv/.html and chart.png (default: outputs/reports/<time>/)",
    )


def report(args: argparse.Namespace) -> int:
    """Collect the runs, build the table, write the files, print the table and the paths."""
    from harness.report.collect import collect, default_target
    from harness.report.render import write
    from harness.report.table import build_table

    uri, experiment = args.tracking_uri, args.experiment
    if uri is None or experiment is None:
        default_uri, default_experiment = default_target()
        uri, experiment = uri or default_uri, experiment or default_experiment
    collection = collect(uri, experiment, args.model, args.strategy, args.runs)
    table = build_table(collection)
    out = args.out or Path("outputs") / "reports" / time.strftime("%Y-%m-%d_%H-%M-%S")
    written = write(collection, table, out.resolve())
    for note in collection.notes:
        print(f"note: {note}", file=sys.stderr)
    print(written.table_markdown)
    older = sum(len(r.older) for r in collection.runs)
    if older:
        print(f"(the latest ended run of each evaluation; {older} older run(s) of it not shown)")
    for path in (written.markdown, written.csv, written.html, written.chart):
        if path is not None:
            print(f"wrote {path}")
    return 0


def main(argv: list[str] | None = None) -> None:
    """Console entry point; a problem the user can fix ends with its message and exit code 2."""
    parser = argparse.ArgumentParser(
        prog="python -m harness.report",
        description="Compare harness runs recorded in MLflow: a model x dataset table of each "
        "dataset's headline metric, throughput, load time and GPU figures, written as "
        "Markdown, CSV, HTML and a PNG chart.",
    )
    add_cli_args(parser)
    args = parser.parse_args(argv)
    try:
        code = report(args)
    except HarnessError as err:
        print(f"error: {err}", file=sys.stderr)
        code = err.exit_code
    sys.exit(code)
