"""Datasets at once: the five bundled datasets evaluated one after another and all at once
(``max_concurrent_datasets=1`` against ``auto``) against the one resident engine.

    python benchmarks/concurrency.py [--rounds 2] [--engines vllm,hf_process] [--json result.json]

Each round runs both settings once, in a rotating order, as separate processes (``rerun=true``,
``tracking=none``); the figures are medians over rounds of the evaluation wall (from the first
``dataset_started`` to the last dataset's end, from events.jsonl: what the datasets at once
overlap) and of the whole run's ``total_time_s``, and their ratios (at once / one after
another). The metrics of the two settings are compared, dataset by dataset, and must be equal;
each run's planned ``datasets_at_once`` (``summary.json["plan"]``) is shown beside the most
datasets its events had in flight together.
Engines: ``vllm`` (strategy=vllm, the CPU build here) and ``hf_process`` (the HF engine in a
process of its own).

``--sweep`` adds the third row: a three-job local sweep of the bundled model (one dataset a job,
``hydra/launcher=submitit_local``) with one core per job, packed onto this node, against the same
sweep one job at a time (``array_parallelism=1``), and against the default (each job the whole
node, so one at a time); figure: the sweep's wall time, metrics compared job by job.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from common import (
    add_common_args,
    cli,
    machine_description,
    offline_env,
    timed,
    work_folder,
    write_json,
)

ROOT = Path(__file__).resolve().parents[1]
ENGINES = {
    "vllm": ["strategy=vllm"],
    "hf_process": ["strategy=single", "strategy.replica_backend=process"],
}
SETTINGS = {"one after another": "1", "at once": "auto"}
SWEEP = ["-m", "dataset=arith_mc,compare_mc,reverse_gen", "hydra/launcher=submitit_local"]
SWEEP_SETTINGS = {
    "one at a time, 1 core each": ["hydra.launcher.cpus_per_task=1",
                                   "hydra.launcher.array_parallelism=1"],
    "one at a time, whole node each (default)": [],
    "packed, 1 core each": ["hydra.launcher.cpus_per_task=1"],
}  # fmt: skip


def add_cli_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rounds", type=int, default=2, help="runs of each setting")
    parser.add_argument("--engines", default="vllm,hf_process", help="comma-separated")
    parser.add_argument("--sweep", action="store_true", help="also the three-job local sweep")
    add_common_args(parser)


def events_of(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]


def evaluation_wall(events: list[dict[str, Any]]) -> float:
    """From the first dataset's start to the last one's end, from the run's events."""
    starts = [e["t"] for e in events if e["event"] == "dataset_started"]
    ends = [e["t"] for e in events if e["event"] in ("dataset_done", "dataset_failed")]
    return max(ends) - min(starts)


def most_in_flight(events: list[dict[str, Any]]) -> int:
    """The most datasets in flight together: started and not yet done or failed."""
    now = most = 0
    for event in events:
        if event["event"] == "dataset_started":
            now += 1
            most = max(most, now)
        elif event["event"] in ("dataset_done", "dataset_failed"):
            now -= 1
    return most


def run_once(work: Path, engine: str, setting: str, n: int) -> dict[str, Any]:
    out = work / f"{engine}_{SETTINGS[setting]}_{n}"
    cmd = [
        sys.executable, "-m", "harness", f"output_dir={out}", f"outputs_root={work / 'outputs'}",
        "tracking=none", "rerun=true", *ENGINES[engine],
        f"max_concurrent_datasets={SETTINGS[setting]}",
    ]  # fmt: skip
    wall = timed(cmd, ROOT, offline_env(work))
    summary = json.loads((out / "summary.json").read_text())
    events = events_of(out)
    return {
        "evaluation_wall_s": evaluation_wall(events),
        "total_time_s": summary["total_time_s"],
        "process_wall_s": wall,
        "datasets_at_once": summary["plan"]["datasets_at_once"],
        "most_in_flight": most_in_flight(events),
        "metrics": {n: d["metrics"] for n, d in summary["datasets"].items()},
    }


def sweep_once(work: Path, setting: str, n: int) -> dict[str, Any]:
    """One run of the three-job sweep: its wall time and each job's metrics and span."""
    out = work / f"sweep_{list(SWEEP_SETTINGS).index(setting)}_{n}"
    cmd = [
        sys.executable, "-m", "harness", *SWEEP, *SWEEP_SETTINGS[setting], "tracking=none",
        "rerun=true", f"outputs_root={out}",
    ]  # fmt: skip
    wall = timed(cmd, ROOT, offline_env(work))
    (sweep_dir,) = (out / "multirun").iterdir()
    jobs = {}
    for path in sorted(sweep_dir.glob("*/summary.json")):
        summary = json.loads(path.read_text())
        jobs[path.parent.name] = {
            "metrics": {n: d["metrics"] for n, d in summary["datasets"].items()},
            "cpus": summary["resources"]["cpus"],
            "span": [summary["started_at"], summary["ended_at"]],
        }
    return {"wall_s": wall, "jobs": jobs}


def sweep_rows(work: Path, rounds: int) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {s: [] for s in SWEEP_SETTINGS}
    for r in range(rounds):
        order = list(SWEEP_SETTINGS)[r % 3 :] + list(SWEEP_SETTINGS)[: r % 3]
        for setting in order:
            runs[setting].append(sweep_once(work, setting, r))
            print(f"round {r + 1} sweep {setting}: done", flush=True)
    packed = statistics.median(x["wall_s"] for x in runs["packed, 1 core each"])

    def metrics(run: dict[str, Any]) -> dict[str, Any]:
        return {name: job["metrics"] for name, job in run["jobs"].items()}

    first = metrics(runs["packed, 1 core each"][0])
    equal = all(metrics(x) == first for xs in runs.values() for x in xs)
    print("\n| sweep of 3 jobs | wall s | packed / this |\n|---|---|---|")
    rows = {}
    for setting, xs in runs.items():
        wall = statistics.median(x["wall_s"] for x in xs)
        rows[setting] = {"wall_s": wall, "packed_ratio": packed / wall}
        print(f"| {setting} | {wall:.1f} | {packed / wall:.2f} |")
    print(f"metrics equal job by job in every run: {equal}")
    return {"runs": runs, "rows": rows, "metrics_equal": equal}


def main(args: argparse.Namespace) -> dict[str, Any]:
    work = work_folder(args.out, "concurrency_")
    engines = [e for e in args.engines.split(",") if e]
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {
        e: {s: [] for s in SETTINGS} for e in engines
    }
    for r in range(args.rounds):
        for engine in engines:
            order = list(SETTINGS)[r % 2 :] + list(SETTINGS)[: r % 2]
            for setting in order:
                got = run_once(work, engine, setting, r)
                runs[engine][setting].append(got)
                print(
                    f"round {r + 1} {engine} {setting}: done (planned "
                    f"{got['datasets_at_once']} at once, {got['most_in_flight']} in flight)",
                    flush=True,
                )
    print(f"\ndatasets at once, {args.rounds} rounds ({machine_description()}):\n")
    print("| engine | evaluation wall, one after another s | at once s | ratio | total, one "
          "after another s | at once s | ratio | metrics equal |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    figures: dict[str, Any] = {"rounds": args.rounds, "runs": runs, "engines": {}}
    for engine in engines:
        seq, par = runs[engine]["one after another"], runs[engine]["at once"]
        row = {}
        for key in ("evaluation_wall_s", "total_time_s"):
            a = statistics.median(x[key] for x in seq)
            b = statistics.median(x[key] for x in par)
            row[key] = {"one after another": a, "at once": b, "ratio": b / a}
        equal = all(x["metrics"] == seq[0]["metrics"] for x in seq + par)
        row["metrics_equal"] = equal
        figures["engines"][engine] = row
        w, t = row["evaluation_wall_s"], row["total_time_s"]
        print(
            f"| {engine} | {w['one after another']:.1f} | {w['at once']:.1f} | {w['ratio']:.2f} | "
            f"{t['one after another']:.1f} | {t['at once']:.1f} | {t['ratio']:.2f} | {equal} |"
        )
    if args.sweep:
        figures["sweep"] = sweep_rows(work, args.rounds)
    write_json(args.json, figures)
    return figures


if __name__ == "__main__":
    cli(__doc__, add_cli_args, main)
