"""The first GPU node's check: harness under Python 3.12, on CUDA, with real NVML, in one go.

    bash benchmarks/gpu_check.sh --out DIR      # on the node (the script installs the wheels)
    bash benchmarks/gpu_check.sh --dry-run      # here: every step that needs no GPU

Steps, each in its own process under its own time limit, the node's python for all of them:
``closure`` (every need of the carried wheels met there), ``py312`` (harness compiles and imports,
and plans Llama-3.1-8B on this node), ``default_cuda`` (the embedded default, ``strategy=single``,
``tracking=none``, on the GPU, with NVML telemetry per phase), ``llama8b`` (a random bf16 model
with Llama-3.1-8B's shape, built on the GPU, loaded by the HF engine; the planner's per-GPU
figure set beside NVML's peak), ``served`` (vLLM's GPU OpenAI server with the bundled model, one
bundled dataset through it with ``strategy=endpoint`` against the in-process vLLM engine's run:
metrics equal; ``skipped`` where the node has no vLLM: gpu_check_served.py), ``gpu_tests``
(``pytest -m gpu tests/gpu``) and ``cpu_tests``
(the fast tests, last: they take what time is left). After every step the figures go to
``DIR/gpu_check.json``; the telemetry plots and step logs go beside it; a table ends the output.

The dry run also builds the wheel folder and sizes what would travel (``wheels``, ``size``);
``py312`` runs under a throwaway Python 3.12 venv with the wheels, the steps that need torch under
this venv's Python 3.11 with the tests' fake NVML (an H200), on the CPU, with small shapes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import gpu_check_gpu as gpu
import gpu_check_served as served
import gpu_check_steps as steps
import gpu_check_wheels as wheels
from common import add_common_args

ROOT = wheels.ROOT
RESERVE_S = 10.0
"""Kept back from the last step: the JSON, the table and the log copy."""
STEPS: dict[str, steps.Step] = {
    "wheels": steps.step_wheels,
    "size": steps.step_size,
    "closure": steps.step_closure,
    "py312": steps.step_py312,
    "default_cuda": gpu.step_default_cuda,
    "llama8b": gpu.step_llama8b,
    "served": served.step_served,
    "gpu_tests": gpu.step_gpu_tests,
    "cpu_tests": gpu.step_cpu_tests,
}


def add_cli_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dry-run", action="store_true", help="no GPU: run what needs none")
    parser.add_argument("--wheels", type=Path, default=wheels.WHEELS_DIR, help="wheel folder")
    parser.add_argument("--budget", type=float, default=520.0, help="seconds for all steps")
    parser.add_argument(
        "--work", type=Path, default=Path("/tmp/gpu_check_work"), help="scratch folder"
    )
    parser.add_argument("--only", default="", help="comma-separated steps to run (default all)")
    parser.add_argument(
        "--smoke-cpu-tests",
        action="store_true",
        help="dry run: collect the fast tests, run only a few folders of them (seconds)",
    )
    add_common_args(parser)


def step_order(dry: bool) -> list[str]:
    """``STEPS``' order; on the node without ``wheels`` and ``size`` (they need PyPI and git):
    the GPU steps before the CPU tests, which then take the time left."""
    return [name for name in STEPS if dry or name not in ("wheels", "size")]


def table(results: list[dict[str, Any]]) -> str:
    rows = [("step", "python", "status", "time_s", "result")]
    for r in results:
        rows.append((r["step"], r["python"], r["status"], f"{r['seconds']:.1f}", r["summary"]))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row[:4], widths, strict=True)) + "  " + row[4]
        for row in rows
    )


def main(args: argparse.Namespace) -> int:
    started = time.time()
    deadline = started + args.budget
    out = args.out or (ROOT / "outputs" / "gpu_check")
    out.mkdir(parents=True, exist_ok=True)
    args.work.mkdir(parents=True, exist_ok=True)
    ctx = steps.Context(
        dry=args.dry_run,
        wheels=args.wheels.resolve(),
        work=args.work.resolve(),
        out=out.resolve(),
        deadline=deadline - RESERVE_S,
        smoke_cpu_tests=args.smoke_cpu_tests,
    )
    report: dict[str, Any] = {
        "mode": "dry-run" if args.dry_run else "gpu",
        "started": started,
        "budget_s": args.budget,
        "machine": steps.machine(),
        "steps": [],
    }
    only = {s for s in args.only.split(",") if s}
    mode = "DRY RUN (no GPU)" if args.dry_run else "on the GPU node"
    print(f"gpu_check: {mode}; budget {args.budget:.0f}s; figures in {out}", flush=True)
    for name in step_order(args.dry_run):
        if only and name not in only:
            continue
        result = steps.run_step(ctx, name, STEPS[name])
        report["steps"].append(result)
        report["seconds"] = round(time.time() - started, 1)
        (out / "gpu_check.json").write_text(json.dumps(report, indent=2) + "\n")
        print(
            f"[{name}] {result['status']} in {result['seconds']:.1f}s ({result['python']}): "
            f"{result['summary']}",
            flush=True,
        )
    logs = sorted(ctx.work.glob("log_*.txt"), key=os.path.getmtime)
    with (out / "steps.log").open("w") as f:
        for log in logs:
            f.write(f"===== {log.name} =====\n{log.read_text(errors='replace')[-2_000_000:]}\n")
    failed = [r["step"] for r in report["steps"] if r["status"] == "failed"]
    skipped = [r["step"] for r in report["steps"] if r["status"] == "skipped"]
    report["failed"], report["skipped"] = failed, skipped
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2) + "\n")
    if args.json:
        shutil.copy(out / "gpu_check.json", args.json)
    print(f"\n{table(report['steps'])}")
    total = time.time() - started
    verdict = "FAILED: " + ", ".join(failed) if failed else "every step that ran passed"
    if skipped:
        verdict += "; skipped (not run): " + ", ".join(skipped)
    print(f"gpu_check ({mode}): {verdict}; {total:.0f}s; {out}/gpu_check.json", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    add_cli_args(parser)
    sys.exit(main(parser.parse_args()))
