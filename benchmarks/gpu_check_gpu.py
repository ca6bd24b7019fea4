"""The GPU check's steps that need torch: the embedded default on CUDA, the random Llama-3.1-8B
beside the planner, the GPU tests and the fast CPU tests (benchmarks/gpu_check.py runs them)."""

from __future__ import annotations

import ast
import json
import shutil
from pathlib import Path
from typing import Any

from gpu_check_steps import NOT_ON_NODE, ROOT, Context, StepFailed, newest_run, run

LLAMA_8B = ROOT / "tests" / "fixtures" / "hf_configs" / "llama3_1_8b.json"
FAST = "not slow and not gpu and not vllm and not ray and not slurm and not browser"
"""The fast CPU tests: README's suite less its end-to-end runs and real parts."""


def phases_of(run_dir: Path) -> list[dict[str, Any]]:
    data = json.loads((run_dir / "telemetry.json").read_text())
    return [
        {k: p[k] for k in ("name", "duration_s", "peak_memory_gib", "energy_j")}
        | {"samples": sum(g["samples"] for g in p["gpus"])}
        for p in data["phases"]
    ]


def keep_telemetry(ctx: Context, run_dir: Path, name: str) -> None:
    for suffix in ("png", "json"):
        src = run_dir / f"telemetry.{suffix}"
        if src.exists():
            (ctx.out / f"{name}_telemetry.{suffix}").write_bytes(src.read_bytes())


def harness_run(ctx: Context, step: str, outputs: Path, *overrides: str) -> Path:
    """``python -m harness ... tracking=none`` (on the CPU in the dry run) into an emptied
    ``outputs`` (an earlier check's results there would be resumed, not run); its run directory."""
    shutil.rmtree(outputs, ignore_errors=True)
    cpu = ["strategy.device=cpu"] if ctx.dry else []
    args = ["-m", "harness", "tracking=none", f"outputs_root={outputs}", *cpu, *overrides]
    run(ctx, step, args)
    run_dir = newest_run(outputs)
    summary = json.loads((run_dir / "summary.json").read_text())
    plan = json.loads((run_dir / "plan.json").read_text())
    if summary["failed"]:
        raise StepFailed(f"datasets failed: {summary['failed']}")
    want = "cpu" if ctx.dry else "cuda"
    if plan["device"] != want:
        raise StepFailed(f"planned on {plan['device']}, expected {want}")
    return run_dir


def step_default_cuda(ctx: Context) -> tuple[str, dict[str, Any]]:
    run_dir = harness_run(ctx, "default_cuda", ctx.work / "default", "strategy=single")
    summary = json.loads((run_dir / "summary.json").read_text())
    phases = phases_of(run_dir)
    keep_telemetry(ctx, run_dir, "default")
    names = [p["name"] for p in phases]
    expected = ["load", *summary["datasets"]]
    if names != expected or any(p["samples"] == 0 for p in phases):
        raise StepFailed(f"telemetry phases {names}, expected {expected}, each with samples")
    load_peak = phases[0]["peak_memory_gib"]
    if not ctx.dry and load_peak <= 0:
        raise StepFailed("NVML saw no memory in use while the model loaded")
    metrics = {k: v["metrics"] for k, v in summary["datasets"].items()}
    times = {k: v["eval_time_s"] for k, v in summary["datasets"].items()}
    line = (
        f"{len(metrics)} datasets ok on {summary['plan']['device']}, load "
        f"{summary['load_time_s']:.1f}s; NVML phases {len(phases)}, load peak {load_peak} GiB"
    )
    figures = {"metrics": metrics, "eval_time_s": times, "phases": phases}
    return line, figures | {"load_time_s": summary["load_time_s"], "run_dir": str(run_dir)}


def nvml_used_gib() -> float | None:
    """Memory in use on GPU 0 now (every process), or None without NVML."""
    from harness.machine.nvml import MIB, import_nvml

    nvml, _ = import_nvml()
    if nvml is None:
        return None
    used = nvml.nvmlDeviceGetMemoryInfo(nvml.nvmlDeviceGetHandleByIndex(0)).used / MIB / 1024
    nvml.nvmlShutdown()
    return round(used, 3)


def step_llama8b(ctx: Context) -> tuple[str, dict[str, Any]]:
    folder = ctx.work / "llama3_1_8b_random"
    device = "cpu" if ctx.dry else "cuda"
    shrink = ["--shrink"] if ctx.dry else []
    cmd = ["benchmarks/gpu_check_model.py", "--config", str(LLAMA_8B), "--out", str(folder)]
    built = run(ctx, "llama8b", [*cmd, "--device", device, *shrink])
    model = json.loads(built.strip().splitlines()[-1])
    baseline = None if ctx.dry else nvml_used_gib()
    run_dir = harness_run(
        ctx,
        "llama8b",
        ctx.work / "llama8b",
        "model=hf",
        f"model.pretrained={folder}",
        "model.name=llama3_1_8b_random",
        "strategy=single",
        "dataset=[arith_mc,story_ppl]",
        "dataset.arith_mc.limit=64",
        "dataset.story_ppl.limit=8",
        "telemetry.interval_s=0.2",
    )
    plan = json.loads((run_dir / "plan.json").read_text())
    phases = phases_of(run_dir)
    keep_telemetry(ctx, run_dir, "llama8b")
    memory = plan["memory"]
    peak = max(p["peak_memory_gib"] for p in phases)
    figures: dict[str, Any] = {"model": model, "plan_memory": memory, "phases": phases}
    figures |= {"nvml_peak_gib": peak, "nvml_baseline_gib": baseline}
    planned = (
        f"planner {memory['needed']:.1f} GiB (weights {memory['weights_per_gpu']:.1f} + KV "
        f"{memory['kv_cache']:.1f} + overhead {memory['overhead']:.1f})"
    )
    if ctx.dry:
        line = f"{model['params'] / 1e6:.0f}M params (small layers, CPU); {planned}; no NVML here"
        return line, figures
    own = round(peak - (baseline or 0.0), 3)
    low, high = memory["weights_per_gpu"], memory["needed"]
    figures |= {"nvml_peak_own_gib": own, "band": [low, high], "ratio": round(own / high, 3)}
    line = f"{model['params'] / 1e9:.2f}B params; {planned} | NVML peak {own:.1f} GiB"
    if not low <= own <= high:
        raise StepFailed(f"{line}: outside the band [weights {low}, needed {high}]")
    return f"{line}, in band [weights, needed]", figures


def step_gpu_tests(ctx: Context) -> tuple[str, dict[str, Any]]:
    extra = {} if ctx.dry else {"HARNESS_REQUIRE_GPU": "1"}
    args = ["-m", "pytest", "-m", "gpu", "tests/gpu", "-p", "no:cacheprovider", "-q", "-rs"]
    text = run(ctx, "gpu_tests", args, fake_gpu=False, **extra)
    last = text.strip().splitlines()[-1].strip("= ")
    if ctx.dry and "passed" in last:
        raise StepFailed(f"GPU tests passed without a GPU: {last}")
    return f"pytest -m gpu tests/gpu: {last}", {"pytest": last}


def imports_of(path: Path) -> set[str]:
    """Top-level packages a test file imports at module level."""
    tree = ast.parse(path.read_text())
    found = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            found |= {a.name.partition(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module.partition(".")[0])
    return found


def fast_test_files(ctx: Context) -> tuple[list[str], list[str]]:
    """Test files whose module-level imports the node has; and those left out."""
    import importlib.util

    keep, left = [], []
    for path in sorted((ROOT / "tests").rglob("test_*.py")):
        missing = {
            m
            for m in imports_of(path)
            if m in NOT_ON_NODE or (not ctx.dry and importlib.util.find_spec(m) is None)
        }
        (left if missing else keep).append(str(path.relative_to(ROOT)))
    return keep, left


def step_cpu_tests(ctx: Context) -> tuple[str, dict[str, Any]]:
    keep, left = fast_test_files(ctx)
    base = ["-m", "pytest", "-m", FAST, "-p", "no:cacheprovider", "-q"]
    figures: dict[str, Any] = {"files": len(keep), "left_out": left}
    if ctx.dry:
        text = run(ctx, "cpu_tests", [*base, "--collect-only", *keep], fake_gpu=False)
        collected = text.strip().splitlines()[-1].strip("= ")
        smoke = ["tests/planning", "tests/machine", "tests/gpu/test_gpu_check_script.py"]
        ran = smoke if ctx.smoke_cpu_tests else keep
        text = run(ctx, "cpu_tests", [*base, *ran], fake_gpu=False)
        last = text.strip().splitlines()[-1].strip("= ")
        figures |= {"collected": collected, "ran": ran, "pytest": last}
        what = "ran " + ", ".join(smoke) if ctx.smoke_cpu_tests else "ran them"
        return f"collected {collected} ({len(keep)} files); {what}: {last}", figures
    workers = ["-n", "8", "--dist", "loadfile"] if importlib_has("xdist") else []
    text = run(ctx, "cpu_tests", [*base, *workers, *keep])
    last = text.strip().splitlines()[-1].strip("= ")
    figures["pytest"] = last
    return f"{len(keep)} files ({len(left)} left out: no mlflow/ray/vllm): {last}", figures


def importlib_has(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None
