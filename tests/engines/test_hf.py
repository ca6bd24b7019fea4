"""The Hugging Face engine in this process: it computes with the threads its plan gives it."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace

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


class Request:
    """What an engine reads of lm-eval's ``Instance``: its ``args``."""

    def __init__(self, *args: object) -> None:
        self.args = args


@pytest.mark.slow  # loads the bundled model
def test_batch_size_auto_searches_once_per_request_shape_and_answers_as_lm_eval(monkeypatch):
    """``batch_size=auto``: lm-eval's HFLM searches its batch size at every call, so at every
    journal slice (issue #35: 8-12 searches a run, the run twice as long as at batch 32). The
    engine searches once per request shape (log-likelihood at its length, generation at its
    prompt plus max_gen_toks), keeps the size for every later slice, says what it found, and
    answers as lm-eval's own search does."""
    from lm_eval.models.huggingface import HFLM

    from harness.engines.inprocess.hf import HFEngine
    from harness.planning.auto import plan_run
    from tests.planning.test_plan import composed

    searches: list[tuple] = []
    detect = HFLM._detect_batch_size

    def counted(self, *args, **kwargs):
        searches.append(args)
        return detect(self, *args, **kwargs)

    monkeypatch.setattr(HFLM, "_detect_batch_size", counted)
    run = composed()
    run = replace(run, strategy=replace(run.strategy, batch_size="auto", max_batch_size=4))
    engine = HFEngine(plan_run(run))
    try:
        scored = [Request(f"{i} + {i} =", f" {2 * i}") for i in range(24)]
        generated = [
            Request(f"{i}, {i + 1},", {"until": ["\n"], "max_gen_toks": 40}) for i in range(6)
        ]
        slices = [("loglikelihood", scored[i : i + 6]) for i in range(0, 24, 6)]
        slices += [("generate_until", generated[i : i + 2]) for i in range(0, 6, 2)]
        ours = [engine.answer(op, part).answers for op, part in slices]
        # one per shape (up to 16 tokens scored, up to 64 generated), not one per slice (7); on
        # the CPU harness's one-pass copy of lm-eval's search (test_batch_search.py)
        assert engine.batch_search.searched == [16, 64] and searches == []
        lm_evals = [engine.lm._detect_batch_size([(None, [0] * (n + 1), [])], 0) for n in (16, 64)]
        assert lm_evals == [4, 4]  # what lm-eval's own search finds at those lengths
        searches.clear()
        found = engine.describe()
        assert found["batch_size"] == "auto" and found["batch_size_searches"] == 2
        by_type = found["batch_sizes_found"]
        assert by_type == {
            "loglikelihood": {"<=16 tokens": 4},
            "generate_until": {"<=64 tokens": 4},
        }
        searches.clear()
        theirs = [getattr(engine.lm, op)(part, disable_tqdm=True) for op, part in slices]
        assert len(searches) == len(slices)  # lm-eval alone: a search per call
        assert ours == theirs
    finally:
        engine.close()


def test_the_plan_says_what_the_engine_batches_by():
    """plan.json (and MLflow's ``plan.*``) say the batch size: the HF engine's as asked
    (``auto`` searched at run time, its sizes in summary.json), vLLM's always ``auto``."""
    from harness.planning.auto import plan_run
    from tests.planning.test_plan import composed

    run = composed()
    auto = replace(run, strategy=replace(run.strategy, batch_size="auto"))
    assert plan_run(auto).to_dict()["batch_size"] == "auto"
    assert plan_run(run).to_dict()["batch_size"] == run.strategy.batch_size == 32
    vllm = composed(strategy="vllm")
    vllm = replace(vllm, strategy=replace(vllm.strategy, batch_size=8))
    assert plan_run(vllm).batch_size == "auto"  # vLLM schedules every request of a call
