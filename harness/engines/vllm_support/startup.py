"""What a vLLM engine really took at start-up, read from its own objects once it is built.

vLLM profiles its memory in each worker (``Worker.determine_available_memory``: the weights as
loaded, the activation peak of a dummy forward pass, the CUDA graphs' estimate, what is left for
the KV cache) and sends the KV cache's size in blocks and tokens back to the process that built
the ``LLM``. The worker's figures live in the worker's process: harness reads them through vLLM's
public worker extension (``worker_extension_cls``: a class whose methods every worker gains,
called by name with ``LLM.collective_rpc``), not from log lines. The frontend's figures
(``cache_config``: blocks, block size, tokens) are read where the ``LLM`` lives.

Every figure is per rank as vLLM holds it; ``startup_memory`` folds the ranks into the figures
the plan states (per GPU: the largest rank, the smallest KV cache; on the CPU, where every rank
shares the host's memory: their sum). A figure vLLM did not report is left out and named in
``not_reported`` with the reason; nothing here ever fails a run.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

GIB = 1024**3
EXTENSION = "harness.engines.vllm_support.startup.StartupMemory"
"""vLLM's ``worker_extension_cls``, dotted (its ``resolve_obj_by_qualname`` splits at the last
dot: ``module:Class`` fails the workers' start)."""
RPC = "harness_startup_memory"
"""The method the extension adds to every worker (a name no vLLM worker has)."""
RPC_TIMEOUT_S = 60.0
NOT_KEPT = {
    (True, "weights_gib"): "vLLM's CPU build repacks linear weights into oneDNN handles outside "
    "the model's parameters, and measures nothing at load",
    (True, "activation_peak_gib"): "vLLM's CPU build profiles no activations",
    (True, "cuda_graphs_gib"): "no CUDA graphs on the CPU",
    (True, "overhead_gib"): "on the CPU vLLM has no budget to leave an overhead in",
}
"""Why a figure is missing, where the reason is known: (on the CPU, figure) -> reason."""


class StartupMemory:
    """Mixed into every vLLM worker by ``worker_extension_cls``: one method reading the worker's
    own memory figures (``self`` is the worker)."""

    def harness_startup_memory(self) -> dict[str, Any]:
        return worker_memory(self)


def worker_memory(worker: Any) -> dict[str, Any]:
    """One worker's start-up memory, in bytes (None where this worker or release keeps none).

    ``weights``: what loading took on the device (``model_runner.model_memory_usage``, vLLM's
    own measure on a GPU), else the bytes of the model's parameters and buffers (the CPU build
    measures nothing at load). ``kv_cache``: the bytes of the KV cache tensors allocated, else
    what the profile left for them. ``activation_peak`` and ``cuda_graphs`` as the profile found
    them (GPU only); ``budget`` what the worker was allowed (``gpu_memory_utilization``)."""
    runner = getattr(worker, "model_runner", None)
    graphs = getattr(worker, "cudagraph_memory_estimate", None)
    peak = getattr(worker, "peak_activation_memory", None)
    if peak is not None and graphs and _graphs_in_peak():
        peak -= graphs  # vLLM's peak holds the graphs' estimate when it sizes the KV cache by it
    allocated = _tensor_bytes(getattr(runner, "kv_caches", None) or [])
    kv = allocated or getattr(worker, "available_kv_cache_memory_bytes", None)
    budget = getattr(worker, "requested_memory", None)
    measured = getattr(runner, "model_memory_usage", 0)
    weights = measured or _model_bytes(runner)
    return {
        "rank": getattr(worker, "rank", None),
        "weights": weights or None,
        "weights_source": ("model_memory_usage" if measured else "parameter bytes")
        if weights
        else None,
        "kv_cache": int(kv) if kv else None,
        "activation_peak": int(peak) if peak is not None else None,
        "cuda_graphs": int(graphs) if graphs is not None else None,
        "budget": int(budget) if budget else None,
    }


def _graphs_in_peak() -> bool:
    try:
        import vllm.envs as envs

        return bool(envs.VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS)
    except (ImportError, AttributeError):
        return False


def _tensor_bytes(tensors: Iterable[Any]) -> int:
    """Bytes of distinct storages among ``tensors`` (nested lists too: a layer may hold K and V
    apart; layers sharing one buffer count it once)."""
    seen: dict[int, int] = {}
    stack = list(tensors)
    while stack:
        item = stack.pop()
        if isinstance(item, list | tuple):
            stack.extend(item)
            continue
        storage = getattr(item, "untyped_storage", None)
        if storage is None:
            continue
        held = storage()
        seen[held.data_ptr()] = held.nbytes()
    return sum(seen.values())


def _model_bytes(runner: Any) -> int:
    """The bytes of the model's parameters and buffers; 0 (not known) when vLLM moved a layer's
    weight out of them: its CPU build repacks linear weights into oneDNN handles and leaves an
    empty ``weight`` behind (``dispatch_cpu_unquantized_gemm``, measured: 135 kB of 3.5 MB left
    for the bundled model)."""
    model = getattr(runner, "model", None)
    if model is None or not hasattr(model, "parameters"):
        return 0
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if weight is not None and hasattr(weight, "numel") and weight.numel() == 0:
            return 0
    return _tensor_bytes([*model.parameters(), *model.buffers()])


def frontend_kv(llm: Any) -> dict[str, Any]:
    """The KV cache as the process holding the ``LLM`` knows it after start-up: blocks, block
    size, tokens (vLLM's ``kv_cache_size_tokens``, else blocks x block size) and the
    concurrency vLLM announced for ``max_model_len``."""
    engine = getattr(llm, "llm_engine", None)
    cache = getattr(getattr(engine, "vllm_config", None), "cache_config", None)
    if cache is None:
        return {}
    blocks, size = getattr(cache, "num_gpu_blocks", None), getattr(cache, "block_size", None)
    tokens = getattr(cache, "kv_cache_size_tokens", None)
    if not tokens and blocks and size:
        tokens = blocks * size
    return {
        "kv_blocks": blocks,
        "block_size": size,
        "kv_tokens": int(tokens) if tokens else None,
        "max_concurrency": getattr(cache, "kv_cache_max_concurrency", None),
        "kv_cache_memory_bytes": getattr(cache, "kv_cache_memory_bytes", None),
    }


def ask_workers(llm: Any) -> tuple[list[dict[str, Any]], str | None]:
    """Every worker's figures through the extension; ``([], reason)`` when they cannot be had."""
    try:
        answers = llm.collective_rpc(RPC, timeout=RPC_TIMEOUT_S)
    except Exception as err:  # an extension not installed, a release without the call
        return [], f"the workers did not answer ({type(err).__name__}: {err})"
    return [a for a in answers if isinstance(a, dict)], None


def fold(ranks: Sequence[dict[str, Any]], device: str) -> dict[str, float | None]:
    """The ranks' bytes folded as the plan states them, in GiB: per GPU the largest rank (the
    smallest KV cache: vLLM sizes every rank's pool by the smallest); on the CPU the host's
    total, every rank's memory summed."""
    out: dict[str, float | None] = {"overhead_gib": None}
    for name in ("weights", "kv_cache", "activation_peak", "cuda_graphs"):
        values = [r[name] for r in ranks if r.get(name) is not None]
        if not values:
            out[f"{name}_gib"] = None
            continue
        if device == "cpu":
            total = sum(values)
        else:
            total = min(values) if name == "kv_cache" else max(values)
        out[f"{name}_gib"] = round(total / GIB, 6)
    budgets = [r["budget"] for r in ranks if r.get("budget")]
    if device != "cpu" and budgets and out["weights_gib"] is not None and out["kv_cache_gib"]:
        # all vLLM kept of its budget beyond weights and KV cache: context, communication
        # buffers, activations, graphs (what the plan's overhead stands for)
        out["overhead_gib"] = round(
            min(budgets) / GIB - out["weights_gib"] - out["kv_cache_gib"], 6
        )
    return out


def startup_memory(llm: Any, device: str, asked_kv_bytes: int | None) -> dict[str, Any]:
    """What the engine took, for summary.json's ``engine.startup_memory`` (``record/memory_check``
    sets it beside the plan). ``asked_kv_bytes``: the KV cache harness asked each CPU worker for
    (``kv_cache_memory_bytes``; None on GPUs, where vLLM sizes it from the budget)."""
    ranks, why = ask_workers(llm)
    front = frontend_kv(llm)
    report: dict[str, Any] = {"device": device, "ranks": len(ranks), **fold(ranks, device)}
    report["kv_tokens"] = front.get("kv_tokens")
    report["kv_blocks"], report["block_size"] = front.get("kv_blocks"), front.get("block_size")
    report["max_concurrency"] = front.get("max_concurrency")
    if asked_kv_bytes:
        report["kv_cache_asked_gib"] = round(asked_kv_bytes * max(1, len(ranks)) / GIB, 6)
        used = front.get("kv_cache_memory_bytes")
        if used and used != asked_kv_bytes:  # VLLM_CPU_KVCACHE_SPACE wins over the plan's ask
            report["kv_cache_used_per_worker_gib"] = round(used / GIB, 6)
    report["per_rank"] = ranks
    missing = {k: v for k, v in report.items() if k.endswith("_gib") and v is None}
    report["not_reported"] = {
        k: why or NOT_KEPT.get((device == "cpu", k), "this vLLM build keeps no such figure")
        for k in missing
    }
    if report["kv_tokens"] is None:
        report["not_reported"]["kv_tokens"] = "vLLM's cache_config holds no KV cache size"
    return {k: v for k, v in report.items() if v is not None}
