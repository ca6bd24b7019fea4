"""The memory of one deployment, per GPU (or of the host): weights, KV cache and the engine's
own terms (planning/memory_terms.py) against the usable memory (planning/gpu_catalogue.py)."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from harness.config.schema import (
    DType,
    EngineKind,
    ModelConfig,
    Quantization,
    StrategyConfig,
    TierConfig,
    load_dtype,
)
from harness.planning.gpu_catalogue import usable_gpu_gib
from harness.planning.memory_terms import (
    PLANNED_VLLM,
    hf_terms,
    split_bytes,
    vllm_batch_limits,
    vllm_terms,
)

GIB = 1024**3
GB = 10**9
WEIGHT_BYTES = {DType.float32: 4.0, DType.bfloat16: 2.0, DType.float16: 2.0}
QUANT_BYTES = {Quantization.int8: 1.0, Quantization.fp8: 1.0, Quantization.int4: 0.5}
KV_BLOCK_TOKENS = 16
"""vLLM allocates its KV cache in blocks of this many tokens (its default block size)."""
CPU_OVERHEAD_GIB = 1.0
"""Python, torch and lm-eval themselves when the model runs on the CPU."""
CPU_MEMORY_FRACTION = 0.8
"""Share of host memory a CPU deployment may use; the rest is left to the OS and page cache."""


@dataclass
class Memory:
    """Memory of one GPU (or of the host, for a CPU deployment), in GiB unless named otherwise.

    On a GPU each term of ``overhead`` is a field of its own (``activation``, ``non_torch``,
    ``cuda_graph``; planning/memory_terms.py), as vLLM reports them at start-up.
    """

    bytes_per_param: float
    weights_total_gb: float
    """All weights, in GB (10^9 bytes), as model cards state them."""
    weights_per_gpu: float
    """Weights on one GPU, in GiB: the largest pipeline stage's, split by tensor parallel (vLLM's
    ``Model loading took``)."""
    kv_bytes_per_token: int
    """KV cache bytes one token takes on one GPU (its share of layers and KV heads)."""
    kv_cache: float
    """KV cache for max_model_len x concurrent_seqs tokens."""
    overhead: float
    """What the budget holds besides weights and KV cache: activation + non_torch (+ cuda_graph
    where the engine takes the graphs from its budget)."""
    needed: float
    budget: float
    """Usable GPU memory x gpu_memory_utilization (host memory x 0.8 on the CPU)."""
    kv_capacity_tokens: int
    """Tokens whose KV cache fits in what the weights and overhead leave of the budget (vLLM's
    ``GPU KV cache size``; whole blocks of 16 for vLLM)."""
    usable_gpu_gib: float = 0.0
    """The GPU memory the budget starts from: CUDA's figure (planning/gpu_catalogue.py); 0 on the
    CPU."""
    activation: float = 0.0
    """Activation peak per GPU in GiB (vLLM: its profile run's ``torch peak memory increase``; HF:
    the logits of the sequences at once)."""
    non_torch: float = 0.0
    """Memory outside torch per GPU in GiB (vLLM: ``non-torch forward increase``, NCCL's buffers
    at tp >= 2; HF: the CUDA context)."""
    cuda_graph: float = 0.0
    """CUDA-graph memory per GPU in GiB (vLLM's ``Estimated CUDA graph memory``; 0 with
    enforce_eager and for the HF engine)."""
    graphs_in_budget: bool = False
    """Whether ``cuda_graph`` is taken from the budget (vLLM >= 0.21) or captured after it."""
    kv_pool: float = 0.0
    """The KV-cache pool per GPU in GiB: the budget less weights and overhead (vLLM's
    ``Available KV cache memory``); 0 for the HF engine, which keeps no pool."""

    @property
    def fits(self) -> bool:
        return self.needed <= self.budget


def weight_bytes_per_param(model: ModelConfig, strategy: StrategyConfig) -> float:
    """Bytes one weight takes: by quantization, else by the dtype it is loaded in."""
    if strategy.quantization != Quantization.none:
        return QUANT_BYTES[strategy.quantization]
    return WEIGHT_BYTES.get(load_dtype(model, strategy), 2.0)


def kv_bytes_per_token(model: ModelConfig, strategy: StrategyConfig) -> int:
    """KV cache bytes per token on one GPU: 2 (K and V) x its layers x its KV heads x head_dim.

    Pipeline stages split the layers; tensor parallel splits the KV heads, and when there are
    fewer KV heads than ranks each rank keeps one replicated head. The cache is kept in the
    activation dtype (weight quantization does not shrink it): 4 bytes for float32 models, else 2.
    """
    assert model.num_layers and model.num_kv_heads and model.head_dim, "facts not resolved"
    layers = math.ceil(model.num_layers / strategy.pipeline_parallel_size)
    kv_heads = math.ceil(model.num_kv_heads / strategy.tensor_parallel_size)
    element = 4 if load_dtype(model, strategy) == DType.float32 else 2
    return 2 * layers * kv_heads * model.head_dim * element


def estimate_memory(
    model: ModelConfig,
    strategy: StrategyConfig,
    tier: TierConfig,
    device: str,
    max_model_len: int,
    vllm_version: str = PLANNED_VLLM,
) -> Memory:
    """The per-GPU (or host, when ``device`` is ``cpu``) memory estimate of one deployment.

    On a GPU the overhead is vLLM's terms for the release ``vllm_version`` (or the HF engine's,
    planning/memory_terms.py). On the CPU, ``needed`` counts every data-parallel replica (each
    loads the weights and holds a KV cache in the same host memory); the other figures are one
    replica's.
    """
    if device != "cuda":
        return _host_memory(model, strategy, tier, max_model_len)
    bpp = weight_bytes_per_param(model, strategy)
    vocab, body = split_bytes(model, strategy, bpp)
    per_token = kv_bytes_per_token(model, strategy)
    usable, _ = usable_gpu_gib(tier)
    if strategy.engine == EngineKind.vllm:
        limits = vllm_batch_limits(strategy, usable, tier.gpu_type)
        terms = vllm_terms(model, strategy, bpp, limits, vllm_version)
    else:
        terms = hf_terms(model, strategy, bpp)
    budget = usable * strategy.gpu_memory_utilization
    kv = per_token * max_model_len * strategy.concurrent_seqs / GIB
    pool = max(0.0, budget - terms.weights - terms.overhead)
    tokens = int(pool * GIB // per_token) if per_token else 0
    if strategy.engine == EngineKind.vllm:
        tokens -= tokens % KV_BLOCK_TOKENS
    return Memory(
        bytes_per_param=bpp,
        weights_total_gb=round((vocab + body) / GB, 3),
        weights_per_gpu=round(terms.weights, 3),
        kv_bytes_per_token=per_token,
        kv_cache=round(kv, 3),
        overhead=round(terms.overhead, 3),
        needed=round(terms.weights + kv + terms.overhead, 3),
        budget=round(budget, 3),
        kv_capacity_tokens=tokens,
        usable_gpu_gib=usable,
        activation=round(terms.activation, 3),
        non_torch=round(terms.non_torch, 3),
        cuda_graph=round(terms.cuda_graph, 3),
        graphs_in_budget=terms.graphs_in_budget,
        kv_pool=round(pool, 3) if strategy.engine == EngineKind.vllm else 0.0,
    )


def _host_memory(
    model: ModelConfig, strategy: StrategyConfig, tier: TierConfig, max_model_len: int
) -> Memory:
    """A CPU deployment's memory: every data-parallel replica in the same host memory."""
    replicas = strategy.data_parallel_size
    bpp = weight_bytes_per_param(model, strategy)
    assert model.num_params, "facts not resolved"
    weights_bytes = model.num_params * bpp
    per_token = kv_bytes_per_token(model, one_rank(strategy))
    kv = per_token * max_model_len * strategy.concurrent_seqs / GIB
    budget = tier.host_memory_gib * CPU_MEMORY_FRACTION
    weights = weights_bytes / GIB
    spare = (budget / replicas - weights - CPU_OVERHEAD_GIB) * GIB
    return Memory(
        bytes_per_param=bpp,
        weights_total_gb=round(weights_bytes / GB, 3),
        weights_per_gpu=round(weights, 3),
        kv_bytes_per_token=per_token,
        kv_cache=round(kv, 3),
        overhead=CPU_OVERHEAD_GIB,
        needed=round(replicas * (weights + kv + CPU_OVERHEAD_GIB), 3),
        budget=round(budget, 3),
        kv_capacity_tokens=max(0, int(spare // per_token)) if per_token else 0,
    )


def served_elsewhere(model: ModelConfig, strategy: StrategyConfig) -> Memory:
    """The memory of an endpoint's plan: nothing loads here, so nothing is needed (the server
    fitted the model when it started); the weights' size is kept for the record."""
    bpp = weight_bytes_per_param(model, strategy)
    total = (model.num_params or 0) * bpp
    return Memory(bpp, round(total / GB, 3), 0.0, 0, 0.0, 0.0, 0.0, 0.0, 0)


def one_rank(strategy: StrategyConfig) -> StrategyConfig:
    return replace(strategy, tensor_parallel_size=1, pipeline_parallel_size=1)
