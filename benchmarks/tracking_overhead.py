"""What MLflow tracking costs: the default run with ``tracking=local`` against ``tracking=none``.

    python benchmarks/tracking_overhead.py [--pairs 5] [--json result.json] [--tree DIR]

Each pair runs the embedded default (the bundled model on the five bundled tasks, ``rerun=true``)
once with ``tracking=local`` and once with ``tracking=none``, as separate CLI processes, the order
alternating from pair to pair so that a slow moment of a shared machine does not always fall on
the same side. Everything goes to an isolated ``outputs_root`` in a temp folder (never the
project's ``outputs/``); one untimed ``tracking=local`` run first creates the MLflow store, so the
pairs measure an existing store, as a user's second run does. Per pair: the wall time of the whole
CLI process (imports, Hydra, the run, exit) and of the run itself (``total_time_s`` of
summary.json: ``run()`` from start to the summary), and the CPU time the process used (user +
system of all its threads: on a machine shared with other work, far less disturbed than wall).
Reported: the medians of both sides and the median of the per-pair differences, in seconds and
in percent of the untracked side.

``--tree DIR`` runs the harness of another checkout (its ``python -m harness`` from that folder),
to measure a copy of the code before a change beside the code after it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SIDES = {"local": ["tracking=local"], "none": ["tracking=none"]}


def add_cli_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pairs", type=int, default=5, help="pairs of runs (tracked, untracked)")
    parser.add_argument("--tree", type=Path, default=ROOT, help="the checkout whose harness runs")
    parser.add_argument("--out", type=Path, default=None, help="work folder (default: a temp dir)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")


def run_once(tree: Path, work: Path, side: str, tag: str) -> dict[str, float]:
    """One CLI run: its process wall time, its CPU time (user + system, every thread) and the
    run's own ``total_time_s``."""
    run_dir = work / "runs" / tag
    env = dict(
        os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false"
    )
    env["PYTHONPATH"] = os.pathsep.join([str(tree), env.get("PYTHONPATH", "")])
    args = [
        sys.executable, "-m", "harness", *SIDES[side], "rerun=true",
        f"outputs_root={work / 'outputs'}", f"output_dir={run_dir}", f"hydra.run.dir={run_dir}",
    ]  # fmt: skip
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(args, cwd=tree, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        raise SystemExit(f"{side} run failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    summary = json.loads((run_dir / "summary.json").read_text())
    return {"wall_s": wall, "run_s": float(summary["total_time_s"]), "cpu_s": cpu}


def measure(tree: Path, work: Path, pairs: int) -> dict:
    load: list[list[float]] = []
    run_once(tree, work, "local", "warmup-local")  # creates the store: pairs see an existing one
    run_once(tree, work, "none", "warmup-none")
    rows = []
    for i in range(pairs):
        order = ["local", "none"] if i % 2 == 0 else ["none", "local"]
        row: dict[str, dict[str, float]] = {}
        for side in order:
            load.append([float(x) for x in Path("/proc/loadavg").read_text().split()[:3]])
            row[side] = run_once(tree, work, side, f"pair{i}-{side}")
        rows.append(row)
        print(
            f"pair {i + 1}/{pairs}: local {row['local']['wall_s']:.2f}s wall "
            f"({row['local']['run_s']:.2f}s run), none {row['none']['wall_s']:.2f}s wall "
            f"({row['none']['run_s']:.2f}s run); CPU local {row['local']['cpu_s']:.2f}s, "
            f"none {row['none']['cpu_s']:.2f}s",
            flush=True,
        )
    out: dict = {"pairs": rows}
    for what in ("wall_s", "run_s", "cpu_s"):
        local = [r["local"][what] for r in rows]
        none = [r["none"][what] for r in rows]
        diffs = [a - b for a, b in zip(local, none, strict=True)]
        base = statistics.median(none)
        out[what] = {
            "local_median": round(statistics.median(local), 3),
            "none_median": round(base, 3),
            "diff_median": round(statistics.median(diffs), 3),
            "diff_pct": round(100 * statistics.median(diffs) / base, 1),
        }
    out["loadavg_1min"] = {
        "min": min(x[0] for x in load),
        "median": statistics.median(x[0] for x in load),
        "max": max(x[0] for x in load),
    }
    out["machine"] = (
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_cli_args(parser)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="tracking-overhead-") as tmp:
        work = args.out or Path(tmp)
        result = measure(args.tree.resolve(), work, args.pairs)
    labels = (("wall_s", "CLI process wall"), ("run_s", "run (total_time_s)"), ("cpu_s", "CPU"))
    for what, label in labels:
        r = result[what]
        print(
            f"{label}: tracking=local {r['local_median']:.2f}s, tracking=none "
            f"{r['none_median']:.2f}s, median pair difference {r['diff_median']:+.2f}s "
            f"({r['diff_pct']:+.1f}%)"
        )
    la = result["loadavg_1min"]
    print(f"load average (1 min) during the runs: {la['min']:.2f} .. {la['max']:.2f}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
