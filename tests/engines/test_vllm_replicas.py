"""vLLM data-parallel replicas on the CPU: each replica's thread binding, and the host memory all
replicas need, checked before anything loads. (Two real vLLM replicas run in
``tests/engines/test_ray_dp.py::test_two_vllm_replicas_equal_the_single_engine``.)"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from harness.engines.vllm_support.cpu import replica_environment
from tests.conftest import assert_clean_failure, run_harness


def plan_of(tp: int) -> SimpleNamespace:
    return SimpleNamespace(tensor_parallel_size=tp, pipeline_parallel_size=1)


@pytest.mark.parametrize(
    ("tp", "share", "bind"),
    [
        (1, [0], "0"),  # two replicas on two cores: one core each
        (1, [1], "1"),
        (1, [2, 3], "2"),  # the share's last core is left to the replica's EngineCore
        (1, [4, 5, 6, 7], "4-6"),
        (2, [0, 1, 2, 3], "0-1|2-3"),  # tp 2 within the share, a part per rank
        (2, [4, 5, 6, 7], "4-5|6-7"),
    ],
)
def test_each_replica_binds_its_threads_within_its_own_share(tp, share, bind):
    assert replica_environment(plan_of(tp), share) == {"VLLM_CPU_OMP_THREADS_BIND": bind}


@pytest.mark.vllm
def test_replicas_whose_kv_caches_do_not_fit_are_refused_before_loading(tmp_path):
    # Host budget 4 GiB x 0.8; one replica (KV cache of 2000 x 256 tokens, ~2 GiB) fits it, two do
    # not: every replica reserves its own KV cache.
    common = ["tier.host_memory_gib=4", "strategy.concurrent_seqs=2000", "tracking=none"]
    proc = run_harness(["strategy=dp", *common], tmp_path, timeout=120)
    assert_clean_failure(
        proc,
        "2 replica(s) x",
        "need 5.9 GiB of host memory",
        "allows 3.2 GiB",
        "strategy.data_parallel_size <= 1",
    )
    one = run_harness(["strategy=vllm", "plan_only=true", *common], tmp_path, timeout=120)
    assert one.returncode == 0 and "FITS" in one.stdout, one.stdout + one.stderr
