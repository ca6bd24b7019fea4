"""The bundled model on the GPU through the HF engine: the CPU's metrics, and NVML telemetry from
the real driver for every phase of the run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import run_harness
from tests.gpu import cuda

pytestmark = pytest.mark.gpu

DATASETS = ["arith_mc", "reverse_gen", "story_ppl"]
LIMITS = ["dataset.arith_mc.limit=100", "dataset.reverse_gen.limit=20"]
LIMITS += ["dataset.story_ppl.limit=10"]


def _run(tmp: Path, device: str) -> Path:
    """One ``python -m harness`` of the bundled model on ``device``; its run directory."""
    outputs = tmp / device
    args = ["strategy=single", f"strategy.device={device}", "tracking=none"]
    args += [f"dataset=[{','.join(DATASETS)}]", *LIMITS, "telemetry.interval_s=0.2"]
    proc = run_harness([*args, f"outputs_root={outputs}"], tmp, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (run_dir,) = (outputs / "runs").iterdir()
    return run_dir


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    cuda()
    tmp = tmp_path_factory.mktemp("hf_cuda")
    return {device: _run(tmp, device) for device in ("cuda", "cpu")}


def _metrics(run_dir: Path) -> dict[str, dict[str, float]]:
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["failed"] == []
    return {name: d["metrics"] for name, d in summary["datasets"].items()}


def test_the_run_is_planned_and_loaded_on_the_gpu(runs):
    plan = json.loads((runs["cuda"] / "plan.json").read_text())
    assert plan["device"] == "cuda" and plan["engine"] == "hf"
    summary = json.loads((runs["cuda"] / "summary.json").read_text())
    assert summary["engine"]["device"] == "cuda"


def test_metrics_on_the_gpu_equal_the_cpus(runs):
    """fp32 on both: the same choices and exact matches, perplexities to rounding."""
    on_gpu, on_cpu = _metrics(runs["cuda"]), _metrics(runs["cpu"])
    assert sorted(on_gpu) == sorted(on_cpu) == sorted(DATASETS)
    for name in DATASETS:
        assert on_gpu[name].keys() == on_cpu[name].keys()
        for metric, value in on_cpu[name].items():
            if metric.endswith("_stderr"):
                continue
            assert on_gpu[name][metric] == pytest.approx(value, rel=1e-4, abs=1e-6), (
                f"{name} {metric}: cuda {on_gpu[name][metric]} vs cpu {value}"
            )


def test_real_nvml_telemetry_has_every_phase_with_memory_in_use(runs):
    telemetry = json.loads((runs["cuda"] / "telemetry.json").read_text())
    (node,) = telemetry["nodes"]
    assert node["gpus"] and node["gpus"][0]["memory_total_mib"] > 10_000
    assert "fake" not in node["gpus"][0]["uuid"]
    assert node["stopped_early"] is None
    phases = {p["name"]: p for p in telemetry["phases"]}
    assert list(phases) == ["load", *DATASETS]
    for name, phase in phases.items():
        (gpu,) = [g for g in phase["gpus"] if g["gpu"] == "gpu0"]
        assert gpu["samples"] >= 2, name  # a reading at each boundary at least
        assert phase["peak_memory_gib"] > 0, f"{name}: NVML saw no memory in use"
        assert phase["duration_s"] > 0
    # the model stays resident: every dataset runs with at least the memory the load left
    evaluated = [phases[name]["peak_memory_gib"] for name in DATASETS]
    assert min(evaluated) >= 0.5 * phases["load"]["peak_memory_gib"]
    assert (runs["cuda"] / "telemetry.png").stat().st_size > 10_000
