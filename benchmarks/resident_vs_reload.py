"""Resident vs reload: five datasets through harness (one model load) vs five `lm_eval` CLI runs.

    python benchmarks/resident_vs_reload.py [--out /tmp/bench] [--json result.json]

Both sides use the bundled tiny model on the CPU, batch size 32, lm-eval's default seeds, and the
same five bundled tasks; harness runs with tracking=none, as the CLI tracks nothing. Prints a
Markdown table of wall times, their ratio, and each task's headline metric from both sides.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TASKS = ["arith_mc", "compare_mc", "reverse_gen", "successor_gen", "story_ppl"]
HEADLINE = {
    "arith_mc": "acc,none",
    "compare_mc": "acc,none",
    "reverse_gen": "exact_match,none",
    "successor_gen": "exact_match,none",
    "story_ppl": "bits_per_byte,none",
}
MODEL = ROOT / "plugins" / "models" / "tiny_char"


def add_cli_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=None, help="work folder (default: a temp dir)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")


def _env(work: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(HF_HOME=str(work / "hf_home"), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    return env


def _timed(cmd: list[str], work: Path) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=_env(work), capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    return elapsed


def run_harness(work: Path) -> tuple[float, dict[str, float]]:
    out = work / "harness"
    cmd = [sys.executable, "-m", "harness", f"output_dir={out}", "tracking=none"]
    wall = _timed(cmd, work)
    scores = {}
    for task in TASKS:
        result = json.loads((out / "results" / f"{task}.json").read_text())
        scores[task] = result["results"][task][HEADLINE[task]]
    return wall, scores


def run_cli(work: Path) -> tuple[float, list[float], dict[str, float]]:
    walls, scores = [], {}
    for task in TASKS:
        out = work / "cli" / task
        cmd = [
            sys.executable, "-m", "lm_eval", "--model", "hf",
            "--model_args", f"pretrained={MODEL},dtype=float32",
            "--tasks", task, "--include_path", str(ROOT / "plugins" / "tasks"),
            "--device", "cpu", "--batch_size", "32", "--output_path", str(out),
        ]  # fmt: skip
        walls.append(_timed(cmd, work))
        (result_file,) = out.rglob("results_*.json")
        scores[task] = json.loads(result_file.read_text())["results"][task][HEADLINE[task]]
    return sum(walls), walls, scores


def main(args: argparse.Namespace) -> dict:
    work = args.out or Path(tempfile.mkdtemp(prefix="resident_vs_reload_"))
    work.mkdir(parents=True, exist_ok=True)
    resident_wall, resident_scores = run_harness(work)
    reload_wall, reload_walls, reload_scores = run_cli(work)
    figures = {
        "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}",
        "resident_wall_s": round(resident_wall, 2),
        "reload_wall_s": round(reload_wall, 2),
        "reload_walls_s": [round(w, 2) for w in reload_walls],
        "ratio_resident_over_reload": round(resident_wall / reload_wall, 3),
        "scores_equal": all(
            abs(resident_scores[t] - reload_scores[t]) <= 1e-9 * max(1.0, abs(reload_scores[t]))
            for t in TASKS
        ),
        "resident_scores": resident_scores,
        "reload_scores": reload_scores,
    }
    print("| task | metric | harness (1 load) | lm_eval CLI (5 loads) |")
    print("|---|---|---|---|")
    for task in TASKS:
        metric = HEADLINE[task].split(",")[0]
        print(f"| {task} | {metric} | {resident_scores[task]:.6g} | {reload_scores[task]:.6g} |")
    print()
    print(f"harness, one load, 5 datasets: {resident_wall:.1f} s")
    each = ", ".join(f"{w:.1f}" for w in reload_walls)
    print(f"lm_eval CLI, 5 runs: {reload_wall:.1f} s ({each})")
    print(f"ratio harness / CLI: {figures['ratio_resident_over_reload']:.3f}")
    print(f"scores equal: {figures['scores_equal']}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return figures


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_cli_args(parser)
    main(parser.parse_args())
