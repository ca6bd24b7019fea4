"""Service vs loading: three separate runs against one model service vs the same three runs each
loading vLLM itself.

    python benchmarks/services.py [--datasets arith_mc,reverse_gen,story_ppl] [--out /tmp/bench]
                                  [--json f.json]

The service side: ``python -m harness.serve model=tiny_char strategy=vllm`` (vLLM's own OpenAI
server on 127.0.0.1, started, waited for and health-checked; its whole wall time is counted),
then one ``python -m harness model=tiny_char strategy=vllm dataset=[X]`` per dataset, each a
process of its own that attaches to the service. The loading side: the same three invocations
with ``attach=false``, each building its in-process vLLM engine. Every run has
``tracking=none`` and ``rerun=true``; each side has an ``outputs_root`` of its own in the work
folder (the service's registry lives in the service side's), so nothing of the repository's
``outputs`` is touched and no run resumes from an earlier one's result store. The runs are
offline, as the tests run. The service is stopped (``python -m harness.serve --stop all``, the
same ``outputs_root``) before the loading side starts, so that it takes no core from it, and
again at the end whatever happened; the script checks that none of its processes is left.

Prints a Markdown table of each run's wall and load time, the totals, their ratio (service side
/ loading side; issue 33's goal: at most 0.4 on this CPU machine) and every metric of both sides,
and says whether they are equal. It asserts no time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from common import (
    add_common_args,
    cli,
    loadavg,
    machine_description,
    offline_env,
    timed,
    work_folder,
    write_json,
)

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ["arith_mc", "reverse_gen", "story_ppl"]
MODEL = ["model=tiny_char", "strategy=vllm"]


def add_cli_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--datasets",
        default=",".join(DATASETS),
        help="bundled datasets, one run each (comma-separated)",
    )
    add_common_args(parser)


def _env(work: Path) -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    return offline_env(work, PYTHONPATH=path, TOKENIZERS_PARALLELISM="false")


def serve(work: Path, root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m harness.serve ARGS outputs_root=ROOT``, to its end."""
    cmd = [sys.executable, "-m", "harness.serve", *args, f"outputs_root={root}"]
    return subprocess.run(cmd, cwd=ROOT, env=_env(work), capture_output=True, text=True)


def service_pids(root: Path) -> list[int]:
    """The pids of every registered service's server and the processes of its group."""
    from harness.service.registry import read_registry
    from harness.service.server import group_members

    pids = []
    for entry in read_registry(root).entries.values():
        pids += [int(p) for p in group_members(entry.pid, entry.pid_start)]
    return pids


def stop_all(work: Path, root: Path, pids: list[int]) -> float:
    """Stop every service of ``root`` and wait (30 s at most) until none of ``pids`` runs; the
    wall time of the stop command."""
    start = time.perf_counter()
    proc = serve(work, root, "--stop", "all")
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        print(f"--stop all failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    deadline = time.monotonic() + 30
    while _alive(pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    return wall


def _alive(pids: list[int]) -> list[int]:
    alive = []
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        except PermissionError:
            pass
        alive.append(pid)
    return alive


def run(work: Path, side: str, dataset: str, *extra: str) -> dict[str, Any]:
    """One ``python -m harness`` invocation of one dataset: its wall time and summary."""
    out = work / side / dataset
    cmd = [
        sys.executable, "-m", "harness", *MODEL, f"dataset=[{dataset}]", "tracking=none",
        "rerun=true", f"outputs_root={work / side / 'outputs'}", f"output_dir={out}", *extra,
    ]  # fmt: skip
    wall = timed(cmd, ROOT, _env(work))
    summary = json.loads((out / "summary.json").read_text())
    if summary["resumed"] or summary["failed"]:
        sys.exit(f"{side} run of {dataset} did not evaluate it: {summary['resumed']=} "
                 f"{summary['failed']=}")  # fmt: skip
    return {
        "wall_s": wall,
        "load_time_s": float(summary["load_time_s"]),
        "service_id": summary["engine"].get("service_id"),
        "metrics": summary["datasets"][dataset]["metrics"],
    }


def service_side(work: Path, datasets: list[str]) -> dict[str, Any]:
    """Start the service, run each dataset attached to it, stop it: the walls and metrics."""
    root = work / "service" / "outputs"
    start = time.perf_counter()
    proc = serve(work, root, *MODEL)
    start_wall = time.perf_counter() - start
    pids = service_pids(root)
    try:
        if proc.returncode != 0:
            sys.exit(f"the serve command failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        runs = {d: run(work, "service", d) for d in datasets}
        pids = sorted(set(pids) | set(service_pids(root)))
    finally:
        stop_wall = stop_all(work, root, pids)
    unattached = [d for d, r in runs.items() if not r["service_id"]]
    if unattached:
        sys.exit(f"these runs loaded vLLM instead of attaching: {unattached}")
    return {
        "start_wall_s": start_wall,
        "stop_wall_s": stop_wall,
        "runs": runs,
        "total_wall_s": start_wall + sum(r["wall_s"] for r in runs.values()),
        "left_processes": _alive(pids),
    }


def loading_side(work: Path, datasets: list[str]) -> dict[str, Any]:
    runs = {d: run(work, "loading", d, "attach=false") for d in datasets}
    attached = [d for d, r in runs.items() if r["service_id"]]
    if attached:
        sys.exit(f"these runs attached despite attach=false: {attached}")
    return {"runs": runs, "total_wall_s": sum(r["wall_s"] for r in runs.values())}


def main(args: argparse.Namespace) -> dict:
    work = work_folder(args.out, "services_")
    datasets = [d for d in args.datasets.split(",") if d]
    load = [loadavg()]
    served = service_side(work, datasets)
    load.append(loadavg())
    loading = loading_side(work, datasets)
    load.append(loadavg())
    ratio = served["total_wall_s"] / loading["total_wall_s"]
    equal = all(served["runs"][d]["metrics"] == loading["runs"][d]["metrics"] for d in datasets)
    figures = {
        "machine": machine_description(),
        "datasets": datasets,
        "loadavg_start_service_loading_end": load,
        "service_start_wall_s": round(served["start_wall_s"], 2),
        "service_stop_wall_s": round(served["stop_wall_s"], 2),
        "service_total_wall_s": round(served["total_wall_s"], 2),
        "loading_total_wall_s": round(loading["total_wall_s"], 2),
        "ratio_service_over_loading": round(ratio, 3),
        "metrics_equal": equal,
        "service_processes_left": served["left_processes"],
        "service_runs": _rounded(served["runs"]),
        "loading_runs": _rounded(loading["runs"]),
    }
    print("| run | service side: wall s | load s | loading side: wall s | load s |")
    print("|---|---|---|---|---|")
    print(f"| `harness.serve` (start, wait, check) | {served['start_wall_s']:.1f} | | | |")
    for d in datasets:
        s, r = served["runs"][d], loading["runs"][d]
        print(f"| dataset=[{d}] | {s['wall_s']:.1f} | {s['load_time_s']:.2f} "
              f"| {r['wall_s']:.1f} | {r['load_time_s']:.2f} |")  # fmt: skip
    print(f"| **total** | **{served['total_wall_s']:.1f}** | | "
          f"**{loading['total_wall_s']:.1f}** | |")  # fmt: skip
    print()
    print(f"ratio service side / loading side: {ratio:.3f} (issue 33's goal: at most 0.4)")
    print(f"service stop (not counted): {served['stop_wall_s']:.1f} s; "
          f"processes left: {served['left_processes'] or 'none'}")  # fmt: skip
    print()
    print("| dataset | metric | service side | loading side |")
    print("|---|---|---|---|")
    for d in datasets:
        s, r = served["runs"][d]["metrics"], loading["runs"][d]["metrics"]
        for key in sorted(set(s) | set(r)):
            print(f"| {d} | {key} | {s.get(key)!r} | {r.get(key)!r} |")
    print(f"metrics equal: {'yes' if equal else 'NO'}")
    print(f"load average (start, after service side, after loading side): {' | '.join(load)}")
    write_json(args.json, figures)
    return figures


def _rounded(runs: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        d: {**r, "wall_s": round(r["wall_s"], 2), "load_time_s": round(r["load_time_s"], 3)}
        for d, r in runs.items()
    }


if __name__ == "__main__":
    cli(__doc__, add_cli_args, main)
