"""Deployment rules: does this strategy make sense for this model on this tier?

Each message names the value, the rule and a fix, in the manner of vLLM's "Total number of
attention heads (…) must be divisible by tensor parallel size (…)".
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from harness.config.schema import (
    COUNTED_FACTS,
    EngineKind,
    ExecutorBackend,
    ModelConfig,
    Quantization,
    ReplicaBackend,
    StrategyConfig,
    TierConfig,
)
from harness.errors import number

FP8_GPUS = ("L4", "L40", "L40S", "H100", "H200", "H800", "H20", "GH200", "B100", "B200", "GB200")
"""GPUs with fp8 tensor cores (compute capability 8.9 and up)."""
GPU_TIERS = "small, medium, large, xlarge"
SIZE_KEYS = (
    "tensor_parallel_size",
    "pipeline_parallel_size",
    "data_parallel_size",
    "concurrent_seqs",
)
"""Strategy sizes that must be at least 1."""


def divisors(n: int, limit: int = 16) -> str:
    return ", ".join(str(d) for d in range(1, min(n, limit) + 1) if n % d == 0)


AUTO_BATCH = re.compile(r"^auto(:(\d+(\.\d+)?))?$")
"""lm-eval's automatic batch size: ``auto``, or ``auto:N`` (found again N times)."""


PLAN_OWNED: dict[str, str] = {
    "pretrained": "model.pretrained",
    "model": "model.pretrained",
    "revision": "model.revision",
    "trust_remote_code": "model.trust_remote_code",
    "dtype": "strategy.dtype",
    "torch_dtype": "strategy.dtype",
    "device": "strategy.device",
    "tensor_parallel_size": "strategy.tensor_parallel_size",
    "pipeline_parallel_size": "strategy.pipeline_parallel_size",
    "data_parallel_size": "strategy.data_parallel_size",
    "parallelize": "strategy.tensor_parallel_size (with the vLLM engine)",
    "quantization": "strategy.quantization",
    "max_model_len": "strategy.max_model_len",
    "max_length": "strategy.max_model_len",
    "gpu_memory_utilization": "strategy.gpu_memory_utilization",
    "kv_cache_dtype": "strategy.kv_cache_dtype",
    "kv_cache_memory_bytes": "the plan (from tier.host_memory_gib on the CPU)",
    "enforce_eager": "strategy.enforce_eager",
    "distributed_executor_backend": "strategy.executor_backend",
    "batch_size": "strategy.batch_size",
    "max_batch_size": "strategy.max_batch_size",
    "seed": "seed",
    "enable_thinking": "enable_thinking",
    "think_end_token": "think_end_token",
    "chat_template_args": "chat_template_args",
}
"""Engine keywords the plan or another setting derives, and that setting: refused in
``strategy.engine_args`` (one place decides each)."""


def engine_args_problems(strategy: StrategyConfig) -> list[str]:
    """``strategy.engine_args`` is a mapping, and names no keyword another setting decides
    (the engine's own check of every key is ``harness.config.engine_args``)."""
    given = strategy.engine_args
    if given is None:
        return []
    if not isinstance(given, Mapping):
        return [
            f"strategy.engine_args={given!r}: must be a mapping of the engine's keyword "
            "arguments. Fix: strategy.engine_args={max_num_seqs:256,enable_prefix_caching:true}."
        ]
    return [
        f"strategy.engine_args.{key}: {PLAN_OWNED[key]} decides it (the plan builds the engine "
        f"from it). Fix: set {PLAN_OWNED[key]} instead, and drop it from engine_args."
        for key in given
        if key in PLAN_OWNED
    ]


VLLM_RELEASE = re.compile(r"\d+\.\d+(\.\d+)?")
"""A vLLM release as ``strategy.vllm_version`` takes it."""


def batch_size_problems(strategy: StrategyConfig) -> list[str]:
    """``strategy.batch_size`` as lm-eval takes it: a number of at least 1, ``auto`` or
    ``auto:N``; ``max_batch_size`` at least 1."""
    value, problems = strategy.batch_size, []
    auto = isinstance(value, str) and AUTO_BATCH.match(value)
    number = isinstance(value, int) and not isinstance(value, bool)
    if (number and value < 1) or not (number or auto) or (auto and auto.group(2) == "0"):
        problems.append(
            f"strategy.batch_size={value}: must be a number of at least 1, auto (the largest "
            "that fits) or auto:N (found again N times per dataset). Fix: set "
            "strategy.batch_size=1 or more, or strategy.batch_size=auto."
        )
    if strategy.max_batch_size is not None and strategy.max_batch_size < 1:
        problems.append(
            f"strategy.max_batch_size={strategy.max_batch_size}: must be at least 1. Fix: "
            "strategy.max_batch_size=64, or null for the engine's default."
        )
    return problems


def size_problems(strategy: StrategyConfig) -> list[str]:
    """Sizes that must be positive before anything can be planned."""
    problems = []
    problems += batch_size_problems(strategy) + engine_args_problems(strategy)
    for key in SIZE_KEYS:
        value = getattr(strategy, key)
        if value < 1:
            problems.append(
                f"strategy.{key}={value}: must be at least 1. Fix: set strategy.{key}=1 or more."
            )
    if not 0 < strategy.gpu_memory_utilization <= 1:
        problems.append(
            f"strategy.gpu_memory_utilization={number(strategy.gpu_memory_utilization)}: must "
            "be in (0, 1]. Fix: use a fraction such as 0.9."
        )
    if strategy.vllm_version is not None and not VLLM_RELEASE.fullmatch(str(strategy.vllm_version)):
        problems.append(
            f"strategy.vllm_version={strategy.vllm_version}: must be a vLLM release as "
            "MAJOR.MINOR or MAJOR.MINOR.PATCH. Fix: strategy.vllm_version=0.19.0, or null for "
            "the pinned GPU build."
        )
    if strategy.max_model_len is not None and strategy.max_model_len < 1:
        problems.append(
            f"strategy.max_model_len={strategy.max_model_len}: must be positive or null. "
            "Fix: remove it to use the model's context window."
        )
    if not strategy.journal_slice_s > 0:
        problems.append(
            f"strategy.journal_slice_s={number(strategy.journal_slice_s)}: must be a positive "
            "number of seconds. Fix: strategy.journal_slice_s=5."
        )
    if strategy.stall_timeout_s is not None and not strategy.stall_timeout_s > 0:
        problems.append(
            f"strategy.stall_timeout_s={number(strategy.stall_timeout_s)}: must be a positive "
            "number of seconds, or null (scaled from the model's size). Fix: "
            "strategy.stall_timeout_s=600."
        )
    return problems


def model_fact_problems(model: ModelConfig) -> list[str]:
    """Architecture facts the planner divides by must be positive."""
    problems = []
    for key in ("num_params", *COUNTED_FACTS):
        value = getattr(model, key)
        if value is not None and value < 1:
            problems.append(
                f"model.{key}={value} for '{model.name}': must be positive. Fix: take it from the "
                "model's config.json (conf/model/<name>.yaml cites where each figure comes from)."
            )
    total = model.num_params
    if model.num_active_params is not None and total and not 0 < model.num_active_params <= total:
        problems.append(
            f"model.num_active_params={model.num_active_params} for '{model.name}': must be "
            f"positive and at most num_params ({model.num_params}). Fix: null for dense models."
        )
    return problems


def plannable(strategy: StrategyConfig) -> StrategyConfig:
    """The strategy with sizes that ``size_problems`` refuses set to 1, so the rest can be planned
    and every problem reported at once."""
    fixed: dict[str, Any] = {key: 1 for key in SIZE_KEYS if getattr(strategy, key) < 1}
    if not 0 < strategy.gpu_memory_utilization <= 1:
        fixed["gpu_memory_utilization"] = 1.0
    if strategy.max_model_len is not None and strategy.max_model_len < 1:
        fixed["max_model_len"] = None
    if strategy.vllm_version is not None and not VLLM_RELEASE.fullmatch(str(strategy.vllm_version)):
        fixed["vllm_version"] = None
    return replace(strategy, **fixed)


def deployment_problems(
    model: ModelConfig,
    strategy: StrategyConfig,
    tier: TierConfig,
    device: str,
    gpus: int,
    nodes: int,
) -> list[str]:
    """Every broken rule of this model x strategy x tier (the memory fit is checked elsewhere)."""
    problems = _model_rules(model, strategy)
    problems += engine_rules(strategy)
    if device == "cuda":
        problems += _gpu_rules(strategy, tier, gpus, nodes)
    problems += _quantization_rules(model, strategy, tier, device)
    return problems


def input_rules(model: ModelConfig, strategy: StrategyConfig) -> list[str]:
    """The rules the model and strategy break whatever the tier: bad input (exit 2, verdict
    REFUSED), not a deployment that does not fit (1). A tier's GPUs are not the config's fault."""
    return (
        _model_rules(model, strategy)
        + engine_rules(strategy)
        + _checkpoint_quantization(model, strategy)
    )


def _model_rules(model: ModelConfig, strategy: StrategyConfig) -> list[str]:
    tp, pp = strategy.tensor_parallel_size, strategy.pipeline_parallel_size
    problems = []
    assert model.num_attention_heads and model.num_kv_heads, "facts not resolved"
    assert model.num_layers and model.context_window, "facts not resolved"
    if model.num_attention_heads % tp:
        problems.append(
            f"model '{model.name}': total number of attention heads ({model.num_attention_heads})"
            f" must be divisible by tensor parallel size ({tp}). Fix: use a tensor_parallel_size"
            f" among {divisors(model.num_attention_heads)}."
        )
    kv = model.num_kv_heads
    if kv % tp and tp % kv:
        problems.append(
            f"model '{model.name}': number of KV heads ({kv}) must be divisible by tensor "
            f"parallel size ({tp}), or tp by it (then KV heads are replicated). Fix: use a "
            f"tensor_parallel_size among {divisors(kv)} or a multiple of {kv}."
        )
    if pp > model.num_layers:
        problems.append(
            f"model '{model.name}': pipeline parallel size ({pp}) exceeds its {model.num_layers} "
            f"layers: every stage needs at least one. Fix: pipeline_parallel_size <= "
            f"{model.num_layers}."
        )
    if strategy.max_model_len and strategy.max_model_len > model.context_window:
        problems.append(
            f"strategy.max_model_len={strategy.max_model_len} exceeds the context window of "
            f"'{model.name}' ({model.context_window} tokens). Fix: set it to at most "
            f"{model.context_window}, or null for the full window."
        )
    return problems


def engine_rules(strategy: StrategyConfig) -> list[str]:
    """The strategy's sizes against its engine (no model fact needed)."""
    sizes = (
        strategy.tensor_parallel_size,
        strategy.pipeline_parallel_size,
        strategy.data_parallel_size,
    )
    # data parallel is replicas of the engine, any kind (harness.engines.ray.replicas)
    problems = []
    if strategy.engine == EngineKind.hf and any(v > 1 for v in sizes[:2]):
        problems = [
            f"strategy '{strategy.name}': engine hf runs on one device, but asks for "
            f"tp={sizes[0]} pp={sizes[1]}. Fix: use a vLLM strategy (tp2, tp4, ...) for "
            "tensor or pipeline parallel, or set both sizes to 1 (data_parallel_size may "
            "be more: one hf replica per device)."
        ]
    return problems + _placement_rules(strategy)


def _placement_rules(strategy: StrategyConfig) -> list[str]:
    """``executor_backend`` is vLLM's; ``replica_backend`` says where a replica lives."""
    problems = []
    name, executor = strategy.name, strategy.executor_backend
    replica = strategy.replica_backend
    if strategy.engine == EngineKind.hf and executor != ExecutorBackend.auto:
        where = {"mp": "process", "ray": "ray"}[executor.value]
        problems.append(
            f"strategy '{name}': executor_backend={executor.value} is vLLM's launcher of its "
            f"tp/pp workers; engine hf has none. Fix: strategy.executor_backend=auto, and "
            f"strategy.replica_backend={where} to put the HF engine in "
            + ("a process of its own." if where == "process" else "a Ray actor.")
        )
    if strategy.engine == EngineKind.vllm and replica == ReplicaBackend.inline:
        problems.append(
            f"strategy '{name}': replica_backend=inline, but vLLM always runs in a process of "
            "its own (closing it must free its memory and leave no worker behind). Fix: "
            "strategy.replica_backend=process (or auto), or ray for a Ray actor."
        )
    if strategy.data_parallel_size > 1 and replica in (
        ReplicaBackend.inline,
        ReplicaBackend.process,
    ):
        problems.append(
            f"strategy '{name}': data_parallel_size={strategy.data_parallel_size} replicas live "
            f"in Ray actors, one each, but replica_backend={replica.value}. Fix: "
            "strategy.replica_backend=ray (or auto), or strategy.data_parallel_size=1."
        )
    return problems


def _gpu_rules(strategy: StrategyConfig, tier: TierConfig, gpus: int, nodes: int) -> list[str]:
    tp = strategy.tensor_parallel_size
    if tier.gpus_per_node < 1 and tier.detected:
        return [
            f"strategy '{strategy.name}' runs on GPUs, but tier '{tier.name}' is this machine "
            "and it has no GPU (NVML finds none). Fix: plan for the machine you will run on with "
            f"its tier ({GPU_TIERS}, or auto) and plan_only=true, send the run there "
            "(hydra/launcher=slurm), or strategy=single to run on this machine's CPU."
        ]
    if tier.gpus_per_node < 1:
        return [
            f"strategy '{strategy.name}' runs on GPUs but tier '{tier.name}' has none. Fix: "
            f"choose a GPU tier ({GPU_TIERS}, or auto), or strategy=single on tier=local (CPU)."
        ]
    if tp > tier.gpus_per_node:
        return [
            f"tensor parallel size ({tp}) exceeds the {tier.gpus_per_node} GPUs per node of tier "
            f"'{tier.name}': tensor parallel stays within one node. Fix: tensor_parallel_size <= "
            f"{tier.gpus_per_node}, with pipeline_parallel_size for more nodes."
        ]
    if gpus > tier.gpus_per_node * tier.nodes:
        return [
            f"strategy '{strategy.name}' needs {gpus} GPUs (tp x pp x dp) on {nodes} node(s), "
            f"but tier '{tier.name}' has {tier.gpus_per_node} x {tier.nodes}. Fix: a smaller "
            f"strategy, strategy=auto, or a bigger tier ({GPU_TIERS})."
        ]
    return []


def _quantization_rules(
    model: ModelConfig, strategy: StrategyConfig, tier: TierConfig, device: str
) -> list[str]:
    q = strategy.quantization
    if q == Quantization.none:
        return []
    problems = _checkpoint_quantization(model, strategy)
    if device != "cuda":
        problems.append(
            f"strategy.quantization={q.value} needs a GPU, and this deployment runs on the CPU. "
            "Fix: strategy.quantization=none, or a GPU tier."
        )
    elif q == Quantization.fp8 and (tier.gpu_type or "").upper() not in FP8_GPUS:
        problems.append(
            f"strategy.quantization=fp8 needs fp8 tensor cores (L4, L40S, H100, H200, B200), "
            f"but tier '{tier.name}' has {tier.gpu_type or 'an unnamed GPU'}. Fix: "
            "strategy=int8, or a tier with H100s (medium, large, xlarge)."
        )
    return problems


def _checkpoint_quantization(model: ModelConfig, strategy: StrategyConfig) -> list[str]:
    """Quantization the engine or the checkpoint cannot give, on any tier."""
    q = strategy.quantization
    problems = []
    if q != Quantization.none and strategy.engine == EngineKind.hf:
        problems.append(
            f"strategy.quantization={q.value}: engine hf loads weights unquantized. Fix: use "
            "strategy=int8 or strategy=fp8 (vLLM), or strategy.quantization=none."
        )
    pretrained = model.pretrained.lower()
    if q == Quantization.int4 and "awq" not in pretrained and "gptq" not in pretrained:
        problems.append(
            f"strategy.quantization=int4 needs a pre-quantized checkpoint (AWQ or GPTQ), but "
            f"model '{model.name}' points at {model.pretrained!r}. Fix: set model.pretrained to "
            "an AWQ/GPTQ repository, or use int8 or fp8, which vLLM quantizes at load time."
        )
    return problems
