"""A service's SLURM job without a cluster: the sbatch script a GPU tier's service is submitted
with (GPU gres cannot run on the local cluster), resources as a sweep's job of the same plan and
tier gets them, the launcher's own values over them, and no key anywhere in it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from harness.errors import ConfigError
from harness.service.options import ServiceConfig
from harness.service.slurm_job import sbatch_text, with_address
from harness.service.start import composition, new_entry, serving_plan, slurm_params
from tests.conftest import assert_clean_failure, offline_env


def script(tmp_path, *overrides: str) -> tuple[str, dict, object]:
    words = ["offline=false", "hydra/launcher=slurm", f"outputs_root={tmp_path}", *overrides]
    composed = composition(words)
    plan = serving_plan(composed.run, on_this_node=False)  # the job's node has the GPUs
    params = slurm_params(composed, plan)
    entry = new_entry(plan, composed.run, ServiceConfig(), "slurm")
    return sbatch_text(params), params, entry


def test_a_tp4_service_on_the_large_tier_asks_for_four_gpus_and_half_the_node(tmp_path):
    text, params, entry = script(tmp_path, "model=llama3_1_70b", "strategy=tp4", "tier=large")
    lines = ["--gpus-per-node=4", "--nodes=1", "--ntasks-per-node=1", "--cpus-per-task=32"]
    lines += ["--mem=512GB", "--time=480", "--partition=gpu", "--job-name=harness-serve"]
    for line in lines:
        assert f"#SBATCH {line}\n" in text, (line, text)
    assert params["max_num_timeout"] == 0  # a service is not requeued
    assert "submitit.core._submit" in text and f"{tmp_path}/services/" in text
    assert entry.launcher == "slurm" and entry.api_key and entry.api_key.startswith("sk-harness-")
    assert entry.api_key not in text and entry.api_key not in " ".join(entry.command)
    flags = " ".join(entry.command)
    assert "--tensor-parallel-size 4" in flags and "--gpu-memory-utilization" in flags
    moved = with_address(entry.command, "10.0.0.7", 8123)  # in the job: the node's address
    at = entry.command.index("--host")
    assert moved[at : at + 4] == ["--host", "10.0.0.7", "--port", "8123"]


def test_the_launchers_values_win_over_the_tiers(tmp_path):
    text, _, _ = script(
        tmp_path, "model=llama3_1_8b", "strategy=vllm", "tier=small",
        "hydra.launcher.partition=h100", "hydra.launcher.timeout_min=30",
        'hydra.launcher.setup=["source /shared/venv/bin/activate"]',
        "+hydra.launcher.additional_parameters.qos=high",
    )  # fmt: skip
    assert "#SBATCH --gpus-per-node=1\n" in text and "#SBATCH --mem=64GB\n" in text
    assert "#SBATCH --partition=h100\n" in text and "#SBATCH --time=30\n" in text
    assert "#SBATCH --qos=high\n" in text
    assert text.index("source /shared/venv/bin/activate") < text.index("srun")


def test_a_slurm_service_where_slurm_is_not_is_refused_and_leaves_nothing(tmp_path):
    """No ``sbatch`` on the PATH (a laptop): exit 2 saying so, no registry entry left."""
    env = offline_env(tmp_path)
    env["PATH"] = str(Path(sys.executable).parent)  # python, but no SLURM command
    proc = subprocess.run(
        [sys.executable, "-m", "harness.serve", "model=tiny_char", "strategy=vllm",
         "hydra/launcher=slurm", f"outputs_root={tmp_path / 'outputs'}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert_clean_failure(proc, "SLURM did not take the service's job")
    assert "no SLURM job was submitted" in proc.stdout
    assert [p.name for p in (tmp_path / "outputs" / "services").iterdir()] == [".registry.lock"]


def test_a_plan_over_two_nodes_is_refused_as_a_service(tmp_path):
    words = ["offline=false", "hydra/launcher=slurm", f"outputs_root={tmp_path}"]
    composed = composition([*words, "model=falcon_180b", "strategy=tp4_pp2", "tier=xlarge"])
    plan = serving_plan(composed.run, on_this_node=False)
    assert plan.nodes_needed == 2
    with pytest.raises(ConfigError) as refused:
        slurm_params(composed, plan)
    assert "needs 2 nodes; a service runs on one node" in str(refused.value)
