"""What GPU telemetry costs a run: evaluation time with telemetry off, at 1 Hz and at 10 Hz.

    python benchmarks/telemetry_overhead.py [--rounds 5] [--gpus 8] [--json result.json]

No GPU is needed: the node's GPUs are the fake NVML of the tests (tests/fake_nvml, put first on
PYTHONPATH), so the model runs on the CPU while the sampler reads ``--gpus`` fake devices. Each
round runs the three settings once, in a rotating order, as separate processes (the bundled
model on the five bundled tasks, ``tracking=none``, ``rerun=true``); the figures are medians over
rounds of the evaluation time (the sum of the datasets' ``eval_time_s``: the part telemetry runs
beside), of the whole wall time (which also holds writing telemetry.json/csv and the plot), and
of the CPU time the process used (user + system: less disturbed by other work on the machine).
On a machine shared with other work the wall and CPU differences are noise well above 1%, so
telemetry's own cost is also measured where it is spent: the CPU time of the sampling thread
and the time the run spends in phase marks (both recorded in summary.json), over the
evaluation time. It also times one reading of every GPU in this process (``Sampler.sample``).
The fake answers faster than a real driver: on a GPU node, time ``sample`` there.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import add_common_args, cli, machine_description, offline_env, work_folder, write_json

ROOT = Path(__file__).resolve().parents[1]
FAKE_NVML = ROOT / "tests" / "fake_nvml"
SETTINGS = {
    "off": ["telemetry.enabled=false"],
    "1 Hz": ["telemetry.interval_s=1.0"],
    "10 Hz": ["telemetry.interval_s=0.1"],
}


def add_cli_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rounds", type=int, default=5, help="runs of each setting")
    parser.add_argument("--gpus", type=int, default=8, help="fake GPUs on the node")
    add_common_args(parser)


def fake_node(gpus: int) -> dict:
    """``gpus`` busy H100s, each reading a little different from the last."""
    readings = 50
    return {
        "gpus": [
            {
                "name": "NVIDIA H100 80GB HBM3",
                "total_mib": 81559,
                "used_mib": [30000 + 10 * i for i in range(readings)],
                "util": [60 + (i % 30) for i in range(readings)],
                "power_w": [400 + i for i in range(readings)],
                "energy_j": [100.0 * i for i in range(readings)],
            }
            for _ in range(gpus)
        ]
    }


def _env(work: Path) -> dict[str, str]:
    return offline_env(
        work,
        PYTHONPATH=os.pathsep.join([str(FAKE_NVML), os.environ.get("PYTHONPATH", "")]),
        FAKE_NVML_SCRIPT=str(work / "nvml.json"),
    )


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_once(work: Path, name: str, n: int) -> dict[str, float]:
    """One run of a setting: evaluation, wall and CPU time of the process, and what telemetry
    measured of itself (its thread's CPU time, the time the run spent in phase marks)."""
    out = work / f"{name.replace(' ', '')}_{n}"
    cmd = [
        sys.executable, "-m", "harness", f"output_dir={out}", f"outputs_root={work / 'outputs'}",
        "tracking=none", "rerun=true", "strategy.device=cpu", *SETTINGS[name],
    ]  # fmt: skip
    start, cpu = time.perf_counter(), _children_cpu()
    proc = subprocess.run(cmd, cwd=ROOT, env=_env(work), capture_output=True, text=True)
    wall, cpu = time.perf_counter() - start, _children_cpu() - cpu
    if proc.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    summary = json.loads((out / "summary.json").read_text())
    telemetry = summary.get("telemetry") or {}
    if name != "off" and not telemetry.get("readings"):
        sys.exit(f"{name}: telemetry recorded nothing\n{proc.stdout[-2000:]}")
    return {
        "eval": sum(d["eval_time_s"] for d in summary["datasets"].values()),
        "wall": wall,
        "cpu": cpu,
        "thread_cpu": telemetry.get("sampler_thread_cpu_s", 0.0),
        "marks": telemetry.get("phase_marks_s", 0.0),
        "readings": telemetry.get("readings", 0),
    }


def tick_cost(work: Path, ticks: int = 2000) -> float:
    """Seconds per ``Sampler.sample`` (one reading of every fake GPU), in this process."""
    os.environ["FAKE_NVML_SCRIPT"] = str(work / "nvml.json")
    sys.path.insert(0, str(FAKE_NVML))
    from harness.telemetry.sampler import open_sampler

    sampler = open_sampler(interval_s=3600)
    assert not isinstance(sampler, str), sampler
    start = time.perf_counter()
    for _ in range(ticks):
        sampler.sample()
    return (time.perf_counter() - start) / ticks


def main(args: argparse.Namespace) -> dict:
    work = work_folder(args.out, "telemetry_overhead_")
    (work / "nvml.json").write_text(json.dumps(fake_node(args.gpus)))
    names = list(SETTINGS)
    times: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    run_once(work, "off", -1)  # warm the caches (page cache, lm-eval's task index)
    for r in range(args.rounds):
        for name in names[r % 3 :] + names[: r % 3]:
            times[name].append(run_once(work, name, r))
            print(f"round {r + 1} {name}: {times[name][-1]}", file=sys.stderr)
    per_tick = tick_cost(work)
    rows = []
    for name in names:
        row: dict[str, object] = {"setting": name, "runs": times[name]}
        for what in ("eval", "wall", "cpu"):
            values = [t[what] for t in times[name]]
            base = statistics.median(t[what] for t in times["off"])
            row[f"{what}_median_s"] = statistics.median(values)
            row[f"{what}_overhead_pct"] = 100 * (statistics.median(values) / base - 1)
        own = [(t["thread_cpu"] + t["marks"]) / t["eval"] for t in times[name]]
        row["own_cost_pct"] = 100 * statistics.median(own)
        rows.append(row)
    figures = {
        "machine": machine_description(host=False),
        "gpus": args.gpus,
        "rounds": args.rounds,
        "tick_s": per_tick,
        "rows": rows,
    }
    print(f"\n{args.gpus} fake GPUs, {args.rounds} rounds; one reading of every GPU "
          f"(Sampler.sample): {per_tick * 1e6:.0f} us\n")  # fmt: skip
    print(
        "| telemetry | evaluation s | vs off | wall s | vs off | CPU s | vs off "
        "| sampler's own cost / evaluation |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        cells = [
            f"{row[f'{what}_median_s']:.2f} | {row[f'{what}_overhead_pct']:+.1f}%"
            for what in ("eval", "wall", "cpu")
        ]
        own = f"{row['own_cost_pct']:.3f}%" if row["setting"] != "off" else "-"
        print(f"| {row['setting']} | " + " | ".join(cells) + f" | {own} |")
    write_json(args.json, figures)
    return figures


if __name__ == "__main__":
    cli(__doc__, add_cli_args, main)
