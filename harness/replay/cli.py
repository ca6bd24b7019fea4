"""``python -m harness.replay RUN_DIR... [--tracking-uri URI]``: replay each, say what was done."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from harness.replay.into_mlflow import replay_run


def main(argv: list[str] | None = None) -> int:
    """Replay each run directory; exit code 1 when any could not be replayed."""
    parser = argparse.ArgumentParser(
        prog="python -m harness.replay",
        description="Log saved run directories into MLflow (idempotent: a run already logged "
        "whole is skipped, a partial one completed in place).",
    )
    parser.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR")
    parser.add_argument(
        "--tracking-uri",
        default=None,
        help="log here instead of each run's own tracking target (sqlite:///path.db, "
        "http://host:port)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    from harness.console import route_library_logs

    route_library_logs("mlflow")  # MLflow's INFO lines (store migrations) stay off the console
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    outcomes = [replay_run(path, args.tracking_uri) for path in args.run_dirs]
    for outcome in outcomes:
        print(f"{outcome.status} {outcome.run_dir}: {outcome.message}", flush=True)
    failed = [o for o in outcomes if o.status == "failed"]
    counts = {s: sum(o.status == s for o in outcomes) for s in ("replayed", "skipped", "failed")}
    print(", ".join(f"{n} {s}" for s, n in counts.items()))
    if failed:
        print(
            "not replayed: " + ", ".join(str(o.run_dir) for o in failed),
            file=sys.stderr,
        )
        return 1
    return 0
