"""What stops a plan's vLLM engine here, found before anything is loaded: vLLM missing, the wrong
build for the plan's device, and what the CPU build cannot do."""

from __future__ import annotations

from typing import TYPE_CHECKING

from harness.engines.vllm_support.cpu import allowed_cpus, cpu_kv_cache_bytes
from harness.engines.vllm_support.install import CPU_DIST, GPU_DIST, INSTALL, installed_vllm

if TYPE_CHECKING:
    from harness.planning.plan import Plan

CPU_HEAD_SIZES = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)
"""Head sizes the CPU build's attention kernel supports
(``vllm/v1/attention/backends/cpu_attn.py``, ``get_supported_head_sizes``)."""


def vllm_problems(plan: Plan) -> list[str]:
    """What stops this plan's vLLM engine here, each with the limit and the alternative.

    Checked before anything is loaded (``harness.engines.engine_problems``), so a run
    never meets these as a vLLM traceback: vLLM missing, the wrong build for the plan's device,
    and what the CPU build cannot do (Ray executor, pipeline parallel, more ranks than CPUs,
    head sizes its attention kernel lacks).
    """
    who = f"strategy '{plan.strategy}'"
    found = installed_vllm()
    if found is None:
        build = CPU_DIST if plan.device == "cpu" else GPU_DIST
        where = "the CPU" if plan.device == "cpu" else "GPUs"
        return [
            f"{who} runs vLLM on {where}, but vLLM is not installed in this "
            f"environment. Fix: {INSTALL[build]}; or strategy=single (the Hugging Face engine); "
            "plan_only=true plans any strategy without vLLM."
        ]
    dist, version = found
    problems = []
    if plan.device == "cpu" and dist == GPU_DIST:
        problems.append(
            f"{who} runs vLLM on the CPU (tier '{plan.tier}' has no GPU), but the vLLM here is "
            f"the CUDA build ({GPU_DIST} {version}). Fix: on a GPU host choose a GPU tier; for "
            f"the CPU use a separate environment with {INSTALL[CPU_DIST]}."
        )
    if plan.device == "cuda" and dist == CPU_DIST:
        problems.append(
            f"{who} runs vLLM on GPUs, but the vLLM here is the CPU build ({CPU_DIST} {version}). "
            f"Fix: {INSTALL[GPU_DIST]}; on this machine "
            "a tier without GPUs (tier=local) runs the same strategy on the CPU."
        )
    if plan.device != "cpu":
        return problems
    cpus = len(allowed_cpus())
    tp, pp = plan.tensor_parallel_size, plan.pipeline_parallel_size
    if plan.executor_backend == "ray":
        problems.append(
            f"{who}: executor_backend=ray, but vLLM's CPU build starts its workers with "
            "multiprocessing only. Fix: strategy.executor_backend=auto (mp, on this node)."
        )
    if pp > 1:
        problems.append(
            f"{who}: pipeline_parallel_size={pp}, but pipeline parallel fails in vLLM's CPU build "
            f"({CPU_DIST} {version}). Fix: strategy.pipeline_parallel_size=1, with "
            f"tensor_parallel_size up to {cpus} here (strategy=tp2), or a GPU tier for stages."
        )
    if tp * pp > cpus:
        problems.append(
            f"{who}: {tp * pp} CPU ranks (tp {tp} x pp {pp}) but this process may use {cpus} "
            f"CPU(s), and each rank needs one of its own. Fix: tensor_parallel_size <= {cpus} "
            f"(strategy=vllm{', strategy=tp2' if cpus >= 2 else ''})."
        )
    problems += _host_memory_problems(plan, who)
    head_dim = plan.model_used.head_dim
    if head_dim is not None and head_dim not in CPU_HEAD_SIZES:
        problems.append(
            f"model '{plan.model}': head_dim {head_dim} is not among the head sizes of vLLM's "
            f"CPU attention ({', '.join(map(str, CPU_HEAD_SIZES))}). Fix: strategy=single (the "
            "Hugging Face engine runs any head size on the CPU), or a GPU tier."
        )
    return problems


def _host_memory_problems(plan: Plan, who: str) -> list[str]:
    """Every CPU worker of every replica reserves its own KV cache (``cpu_kv_cache_bytes``, at
    least 256 MiB), and every replica loads the weights: all of it must fit the host budget."""
    dp, ranks = plan.data_parallel_size, plan.tensor_parallel_size * plan.pipeline_parallel_size
    if dp * ranks == 1:  # the plan's own fit check covers one worker
        return []
    memory = plan.memory
    kv = cpu_kv_cache_bytes(plan) / 1024**3
    replica = memory.weights_per_gpu + ranks * kv + memory.overhead
    if dp * replica <= memory.budget:
        return []
    fits = int(memory.budget // replica)
    return [
        f"{who}: {dp} replica(s) x {replica:.2f} GiB (weights {memory.weights_per_gpu:.2f} + "
        f"{ranks} worker(s) x KV cache {kv:.2f} + overhead {memory.overhead:.1f}) need "
        f"{dp * replica:.1f} GiB of host memory, but tier '{plan.tier}' allows "
        f"{memory.budget:.1f} GiB. Fix: "
        + (f"strategy.data_parallel_size <= {fits}, or " if fits >= 1 else "")
        + "a smaller strategy.max_model_len or strategy.concurrent_seqs (a smaller KV cache)."
    ]
