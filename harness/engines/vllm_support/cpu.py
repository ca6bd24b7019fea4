"""How vLLM's CPU build is placed on this machine's cores and memory: thread binding per rank,
the KV cache each CPU worker reserves, and each data-parallel replica's share of the node."""

from __future__ import annotations

import math
import os
from collections.abc import MutableMapping, Sequence
from typing import TYPE_CHECKING

from harness.config.schema import EngineKind
from harness.planning.plan import cpu_threads_per_rank

if TYPE_CHECKING:
    from harness.planning.plan import Plan

CPU_KV_CACHE_MIN_BYTES = 256 * 1024**2
"""Smallest KV cache given to each CPU worker: room to batch many short requests."""


def allowed_cpus() -> list[int]:
    """CPUs this process may run on (its affinity mask, which cgroups and taskset narrow)."""
    return sorted(os.sched_getaffinity(0))


def threads_bind(cpus: Sequence[int], ranks: int) -> str:
    """``VLLM_CPU_OMP_THREADS_BIND`` for ``ranks`` CPU workers: contiguous, equal shares of
    ``cpus`` separated by ``|`` ("0|1" for two ranks on two cores)."""
    per_rank = max(1, len(cpus) // ranks)
    shares = []
    for rank in range(ranks):
        share = list(cpus[rank * per_rank : (rank + 1) * per_rank])
        first, last = share[0], share[-1]
        contiguous = share == list(range(first, last + 1))
        if contiguous:
            shares.append(str(first) if first == last else f"{first}-{last}")
        else:
            shares.append(",".join(str(c) for c in share))
    return "|".join(shares)


def cpu_kv_cache_bytes(plan: Plan) -> int:
    """KV cache for each CPU worker: what the plan asked for (``max_model_len`` x
    ``concurrent_seqs`` tokens), at least ``CPU_KV_CACHE_MIN_BYTES``.

    Without it the CPU backend reserves ``gpu_memory_utilization`` of host memory and refuses to
    start when less than that is free (measured: "Available memory on node 0 ... is less than
    desired CPU memory utilization").
    """
    planned = math.ceil(plan.memory.kv_cache * 1024**3)
    return max(planned, CPU_KV_CACHE_MIN_BYTES)


def cpu_environment(
    plan: Plan, cpus: Sequence[int], environ: MutableMapping[str, str]
) -> dict[str, str]:
    """Environment the CPU build needs before the ``LLM`` is built; values the user already set
    win. Set only in the engine's own process (its EngineCore and workers inherit it)."""
    ranks = plan.tensor_parallel_size * plan.pipeline_parallel_size
    wanted: dict[str, str] = {}
    if ranks > 1:
        # Without it TP=2 on one NUMA node fails: "Not enough allowed NUMA nodes to bind threads
        # of 2 local CPUWorkers" (measured).
        wanted["VLLM_CPU_OMP_THREADS_BIND"] = threads_bind(cpus, ranks)
    return {k: v for k, v in wanted.items() if not environ.get(k)}


def replica_environment(plan: Plan, cpus: Sequence[int]) -> dict[str, str]:
    """Environment of one data-parallel replica's engine, pinned to ``cpus`` (its share of the
    node): ``VLLM_CPU_OMP_THREADS_BIND`` within that share, one part per rank. A single rank
    leaves the share's last CPU to its EngineCore when it has more than one (vLLM's own x86
    default, ``cpu_threads_per_rank``). It replaces a value inherited from the harness, which
    would bind every replica to the same CPUs."""
    ranks = plan.tensor_parallel_size * plan.pipeline_parallel_size
    if ranks == 1:
        cpus = list(cpus)[: cpu_threads_per_rank(EngineKind.vllm, 1, len(cpus))]
    return {"VLLM_CPU_OMP_THREADS_BIND": threads_bind(cpus, ranks)}


def threads_per_rank(plan: Plan, cpus: Sequence[int]) -> int:
    """OpenMP threads each CPU worker gets: an equal share of the CPUs when we bind them (tp > 1);
    with one rank vLLM binds itself and keeps one core for its EngineCore (x86 ``auto``)."""
    ranks = plan.tensor_parallel_size * plan.pipeline_parallel_size
    return cpu_threads_per_rank(EngineKind.vllm, ranks, len(cpus))
