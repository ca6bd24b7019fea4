"""tier=local is this node, measured: NVML's GPUs, the OS's CPUs and memory, SLURM's allocation.

No GPU exists here, so a small fake NVML module (tests/fake_nvml) stands in for the driver in a
subprocess; the GPU-less path runs against the real (absent) NVML of this machine.
"""

from __future__ import annotations

import json
import os

import pytest

from tests.conftest import FAKE_NVML, run_harness
from tests.planning.test_plan import probe

H100_NODE = "4xNVIDIA H100 80GB HBM3:81559"  # what NVML reports for an 80 GB H100: 81559 MiB


@pytest.fixture
def node_env(monkeypatch):
    """Run the CLI subprocesses against the fake NVML with no SLURM job around them."""
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join([str(FAKE_NVML), os.environ.get("PYTHONPATH", "")])
    )
    for key in list(os.environ):
        if key.startswith("SLURM_") or key == "CUDA_VISIBLE_DEVICES":
            monkeypatch.delenv(key)
    return monkeypatch


def test_default_tier_on_a_four_gpu_node_plans_the_product_command(node_env, tmp_path):
    node_env.setenv("FAKE_NVML_GPUS", H100_NODE)
    code, heavy, out = probe(tmp_path, "model=falcon_40b", "strategy=tp4", "plan_only=true")
    assert code == 0, out
    assert heavy == []
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert plan["fits"] and plan["tier"] == "local" and plan["gpus_available"] == 4
    # NVML's 81559 MiB of an H100 is CUDA's 79.19 GiB, vLLM's base (planning/gpu_catalogue.py)
    assert plan["memory"]["budget"] == pytest.approx(79.19 * 0.9, abs=0.01)
    assert "4 x NVIDIA H100 80GB HBM3 (79.6 GiB)" in out


def test_slurm_allocation_is_what_the_tier_holds(node_env, tmp_path):
    node_env.setenv("FAKE_NVML_GPUS", "8xNVIDIA A100-SXM4-80GB:81920")
    node_env.setenv("SLURM_GPUS_ON_NODE", "2")
    node_env.setenv("SLURM_CPUS_ON_NODE", "16")
    node_env.setenv("SLURM_MEM_PER_NODE", "131072")
    code, _, out = probe(tmp_path, "model=qwen3_8b", "strategy=tp4", "plan_only=true")
    assert code == 1, out  # the job holds 2 of the node's 8 GPUs
    assert "tensor parallel size (4) exceeds the 2 GPUs per node of tier 'local'" in out
    assert "2 x NVIDIA A100-SXM4-80GB (80.0 GiB), 16 CPUs, 128.0 GiB" in out
    assert "SLURM_GPUS_ON_NODE=2" in out and "SLURM_CPUS_ON_NODE" in out


def test_this_gpu_less_machine_says_so_with_the_fix(tmp_path):
    proc = run_harness(["model=falcon_40b", "strategy=tp4", "plan_only=true"], tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "tier 'local' is this machine and it has no GPU (NVML finds none)" in proc.stdout
    assert "Fix: plan for the GPU machine you will run on with its tier" in proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr


def test_detected_values_match_the_os(compose_cfg):
    from harness.config.schema import to_run_config

    tier = to_run_config(compose_cfg("tier=local")).tier
    assert tier.detected and tier.name == "local"
    assert tier.cpus_per_task == len(os.sched_getaffinity(0))
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
    assert 0 < tier.host_memory_gib <= total + 0.01
    overridden = to_run_config(compose_cfg("tier=local", "tier.cpus_per_task=64")).tier
    assert overridden.cpus_per_task == 64  # a value given on the command line wins


@pytest.mark.parametrize(
    "name,family",
    [("NVIDIA H100 80GB HBM3", "H100"), ("NVIDIA A100-SXM4-80GB", "A100"),
     ("NVIDIA L40S", "L40S"), ("Tesla V100-SXM2-32GB", "V100"), ("NVIDIA GeForce RTX 4090", None)],
)  # fmt: skip
def test_gpu_family_from_nvml_name(name, family):
    from harness.machine.node import gpu_type

    assert gpu_type(name) == family


def _driver_library_opens() -> bool:
    import ctypes

    from harness.machine.nvml import NVML_LIBRARY

    try:
        ctypes.CDLL(NVML_LIBRARY)
    except OSError:
        return False
    return True


@pytest.mark.skipif(_driver_library_opens(), reason="this node has an NVIDIA driver")
def test_without_a_driver_nvml_is_not_imported_and_says_the_same():
    """The shortcut (``_bindings_without_driver``) answers as the installed bindings would."""
    import subprocess
    import sys

    script = (
        "import sys\n"
        "{first}"
        "from harness.machine.nvml import import_nvml\n"
        "nvml, why = import_nvml()\n"
        "print(nvml, why, 'pynvml' in sys.modules, sep='|')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the installed pynvml
    said = {}
    for way, first in (("shortcut", ""), ("imported", "import pynvml\n")):
        done = subprocess.run(
            [sys.executable, "-c", script.format(first=first)],
            capture_output=True, text=True, env=env, check=True,
        )  # fmt: skip
        said[way] = done.stdout.strip().split("|")
    assert said["shortcut"] == ["None", said["imported"][1], "False"]
    no_driver = "NVML finds no driver (NVML Shared Library Not Found)"
    assert said["imported"] == ["None", no_driver, "True"]
