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
        metavar="RUN",
        help="exactly these parent runs, one row each (default: the latest FINISHED or FAILED "
        "run of each evaluation: model, strategy, checkpoint and datasets' fingerprints); with "
        "--baseline, the candidates compared against it",
    )
    add_compare_args(parser)
    parser.add_argument(
        "--out",
        type=Path,
        help="folder for report.md/.csv/.html and chart.png (default: outputs/reports/<time>/)",
    )


def _delta(value: str) -> float:
    number = float(value)
    if not number >= 0:
        raise argparse.ArgumentTypeError(f"{value} is not a number >= 0 (a metric difference)")
    return number


def add_compare_args(parser: argparse.ArgumentParser) -> None:
    """The paired comparison's options (harness/compare/)."""
    group = parser.add_argument_group(
        "paired comparison",
        "--baseline RUN --runs RUN [RUN ...] compares each candidate with the baseline sample "
        "by sample (runs evaluated with log_samples=true) and writes compare.json, compare.md "
        "and compare.html. A RUN is a run directory (read without MLflow), an MLflow parent run "
        "id, or the latest ended run of a model/strategy/checkpoint as key=value pairs: "
        "model=tiny_char, model=tiny_char,strategy=single, checkpoint=runs/a/checkpoint-500. "
        "Exit code: 0 pass, 1 a dataset significantly worse by more than --fail-if-worse, "
        "2 bad input.",
    )
    group.add_argument("--baseline", metavar="RUN", help="the run the others are compared with")
    group.add_argument(
        "--fail-if-worse",
        type=_delta,
        metavar="DELTA",
        help="exit 1 when a dataset is significantly worse than the baseline (Holm-adjusted "
        "p < alpha) by more than DELTA in its metric's units (0.02: two points of accuracy)",
    )
    group.add_argument("--alpha", type=float, default=0.05, help="significance level (0.05)")
    group.add_argument(
        "--resamples", type=int, default=9999, help="bootstrap resamples and permutations (9999)"
    )
    group.add_argument("--seed", type=int, default=0, help="seed of the resampling (0)")


def compare_runs(args: argparse.Namespace) -> int:
    """The paired comparison: resolve the runs, compare, write, log, print; the gate's code."""
    import tempfile

    from harness.compare.build import compare
    from harness.compare.log_run import log_comparison
    from harness.compare.mlflow_runs import MlflowRuns
    from harness.compare.output import console_lines, write
    from harness.compare.runs import parse_selector, resolve
    from harness.compare.stats import Settings
    from harness.report.collect import default_target, resolve_uri

    if not args.runs:
        raise HarnessError(
            "--baseline needs candidates: --runs RUN [RUN ...] names the runs compared with it. "
            "Fix: add --runs with a run directory, run id or model=... selector"
        )
    if not 0 < args.alpha < 1 or args.resamples < 1:
        raise HarnessError(
            f"--alpha {args.alpha} / --resamples {args.resamples}: alpha is a significance "
            "level strictly between 0 and 1 and resamples a count of at least 1. Fix: e.g. "
            "--alpha 0.05 --resamples 9999"
        )
    refs = [args.baseline, *args.runs]
    for ref in refs:
        if not Path(ref).is_dir():
            parse_selector(ref)  # a malformed selector is said before any store is opened
    needs_store = args.tracking_uri is not None or any(not Path(r).is_dir() for r in refs)
    store = None
    if needs_store:
        uri, experiment = args.tracking_uri, args.experiment
        if uri is None or experiment is None:
            default_uri, default_experiment = default_target()
            uri, experiment = uri or default_uri, experiment or default_experiment
        store = MlflowRuns(resolve_uri(uri), experiment)
    settings = Settings(alpha=args.alpha, resamples=args.resamples, seed=args.seed)
    out = (args.out or Path("outputs") / "reports" / time.strftime("%Y-%m-%d_%H-%M-%S")).resolve()
    with tempfile.TemporaryDirectory(prefix="harness-compare-") as scratch:
        runs = [resolve(ref, store, Path(scratch) / str(i)) for i, ref in enumerate(refs)]
        document = compare(runs[0], runs[1:], settings, args.fail_if_worse)
    if all(r.source == "mlflow" for r in runs):
        args.runs, args.out = list(dict.fromkeys(r.run_id for r in runs)), out
        args.compare_page = "compare.html"
        report(args)  # the side-by-side table of the same runs, beside compare.json
    written = write(document, out)
    if store is not None:
        logged = log_comparison(store.uri, document, written.json)
        for run_id in logged:
            print(f"comparison logged to MLflow: run {run_id} (experiment harness-compare)")
    print("\n".join(console_lines(document)))
    for path in (written.json, written.markdown, written.html):
        print(f"wrote {path}")
    code = document["exit_code"]
    verdict = {0: "PASS", 1: "FAIL"}[code]
    failing = "; ".join(document["failing"])
    print(f"{verdict}: verdict {document['verdict']}" + (f"; worse: {failing}" if failing else ""))
    return int(code)


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
    written = write(collection, table, out.resolve(), getattr(args, "compare_page", None))
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
        "Markdown, CSV, HTML and a PNG chart; with --baseline, a paired per-sample comparison "
        "(McNemar, bootstrap, permutation tests; Holm) and a CI gate.",
    )
    add_cli_args(parser)
    args = parser.parse_args(argv)
    try:
        code = compare_runs(args) if args.baseline else report(args)
    except HarnessError as err:
        print(f"error: {err}", file=sys.stderr)
        code = err.exit_code
    sys.exit(code)
