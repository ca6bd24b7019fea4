"""The Hugging Face engine in this process: it computes with the threads its plan gives it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from harness.paths import PROJECT_ROOT
from tests.conftest import offline_env

THREADS = """
import os, sys
os.sched_setaffinity(0, [int(c) for c in sys.argv[1].split(",")])  # before torch starts
from dataclasses import replace
import torch
from harness.engines.inprocess.hf import HFEngine
from harness.planning.auto import plan_run
from tests.planning.test_plan import composed
default = torch.get_num_threads()
plan = replace(plan_run(composed()), threads_per_rank=int(sys.argv[2]))
assert plan.device == "cpu" and plan.engine == "hf", plan
engine = HFEngine(plan)
print(default, torch.get_num_threads())
engine.close()
"""


@pytest.mark.slow  # loads the bundled model in a process of its own
@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs to give one")
def test_the_hf_engine_on_the_cpu_uses_the_plans_threads(tmp_path):
    """A one-CPU job without task binding sees every CPU of the node: torch takes them all unless
    the engine applies the plan's thread count (measured: two threads beside another busy process
    ran 4,000 generations of the bundled model in 63 s, one thread in 11.7 s)."""
    two = ",".join(map(str, sorted(os.sched_getaffinity(0))[:2]))
    env = offline_env(tmp_path)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # torch's default: every CPU it may use
        env.pop(name, None)
    proc = subprocess.run(
        [sys.executable, "-c", THREADS, two, "1"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    default, used = map(int, proc.stdout.split()[-2:])
    assert default == 2, "torch would take both CPUs: the check would be void"
    assert used == 1
