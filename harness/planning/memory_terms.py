"""What a GPU deployment takes besides its KV cache, term by term, as vLLM itself counts it.

vLLM's KV-cache pool on each GPU is ``total x gpu_memory_utilization`` less the weights, the
activation peak of its profile run, the memory outside torch (NCCL's buffers with tensor
parallel) and, since vLLM 0.21, its estimate of the CUDA graphs. Each term is modelled from the
model's facts and the plan instead of one flat overhead, and calibrated on vLLM's own start-up
reports (``CALIBRATION``; the planned-against-measured table is in benchmarks/RESULTS.md,
"Planner calibration", and tests/planning/test_memory_terms.py holds the rows).

The HF engine keeps its own terms (``hf_terms``): no KV pool, no graphs, a CUDA context and an
activation allowance.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from harness.config.schema import DType, ModelConfig, Quantization, StrategyConfig, load_dtype

GIB = 1024**3

CALIBRATED_VLLM = "0.19.0"
"""The vLLM release the terms were calibrated on."""
CALIBRATION_SOURCE = (
    "vLLM 0.19.0's start-up reports on H100 80GB (79.19 GiB usable, gpu_memory_utilization 0.95, "
    "`vllm serve`): llm-d-incubation/llm-d-planner, accuracy/results/v0.19.0/logs"
)
"""Where the calibration's measurements come from."""
PLANNED_VLLM = "0.33.0"
"""The release a GPU plan is for: the CUDA build harness pins (pyproject's ``vllm`` extra)."""
GRAPHS_IN_BUDGET_SINCE = (0, 21)
"""From this release vLLM estimates CUDA-graph memory before sizing the KV cache and takes it
from the budget (``VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS``, on by default); before, graphs
were captured after, in the memory outside the budget."""
LEANER_ACTIVATIONS_SINCE = (0, 17)
"""The profile run's activation peak fell at vLLM 0.17 (Qwen3-14B on H100: 5.64 GiB at 0.15 and
0.16, 2.23 at 0.17 and 0.18; llm-d-planner accuracy/results/version-sweep)."""
OLDER_ACTIVATION_FACTOR = 5.64 / 2.23

ACTIVATION_BASE_GIB = 0.11
"""The activation peak's part that neither tokens nor vocabulary explain (fitted)."""
HIDDEN_BYTES_PER_TOKEN = 2
"""Bytes per hidden element of each batched token in the profile run (one 16-bit copy)."""
SAMPLER_BYTES_PER_LOGIT = 14
"""Bytes per logit of the profile's sampler run: fp32 logits, their softmax and the sort of
top-p (values and int64 indices); fitted to the peak's slope with the vocabulary (gemma's 256K
against llama's 128K and granite's 49K)."""
NON_TORCH_ONE_GPU_GIB = 0.25
"""Memory outside torch during the profile run on one GPU (0.24-0.26 GiB measured)."""
NON_TORCH_PIPELINE_GIB = 0.07
"""The same with pipeline stages and no tensor parallel (0.07 measured at pp 2 and 4)."""
NCCL_BASE_GIB = 1.99
NCCL_PER_RANK_GIB = 0.045
"""With tensor parallel NCCL's buffers come on top: 2.06-2.11 GiB per GPU measured at tp 2,
2.13-2.21 at tp 4 (``non-torch forward increase``), so 1.99 + 0.045 x tp."""
GRAPH_BASE_GIB = 0.30
GRAPH_PER_LAYER_GIB = 0.019
"""vLLM's CUDA-graph estimate (``Estimated CUDA graph memory``): 0.84 GiB for 32 layers,
1.82 for 80 (tp 2), 1.70 for 80 (tp 4), 0.61-1.13 for the rest; 0.30 + 0.019 per layer of the
stage."""
HF_CONTEXT_GIB = 0.5
"""The HF engine's CUDA context and torch's own allocations before the model."""
HF_ACTIVATION_GIB = 1.5
"""The HF engine's activation allowance (with its context, the 2 GiB the planner always had)."""


@dataclass(frozen=True)
class GpuTerms:
    """Per-GPU memory besides the KV cache, in GiB."""

    weights: float
    """Weights of the largest stage on one GPU."""
    activation: float
    """Activation peak (vLLM: its profile run; HF: a forward pass of the sequences at once)."""
    non_torch: float
    """Memory outside torch: CUDA context (HF), NCCL's buffers at tp >= 2 (vLLM)."""
    cuda_graph: float
    """CUDA-graph memory (0 with enforce_eager, and for the HF engine)."""
    graphs_in_budget: bool
    """Whether the engine takes the graphs from its budget (vLLM >= 0.21) or after it."""

    @property
    def overhead(self) -> float:
        """What the budget holds besides weights and KV cache."""
        graphs = self.cuda_graph if self.graphs_in_budget else 0.0
        return self.activation + self.non_torch + graphs


def release(version: str) -> tuple[int, int]:
    """``0.19.0`` -> (0, 19); an unreadable version reads as the planned release."""
    parts = version.split(".")
    try:
        return int(parts[0]), int(parts[1])
    except (IndexError, ValueError):
        return release(PLANNED_VLLM)


def split_bytes(model: ModelConfig, strategy: StrategyConfig, bpp: float) -> tuple[float, float]:
    """The bytes of the embedding table + LM head, and of the rest of the weights.

    Weight quantization (fp8, int8, int4) covers the linear layers only: vLLM keeps the
    embedding table and the LM head in the 16-bit dtype (fp8-dynamic checkpoints store them so
    too; Llama-3.3-70B fp8-dynamic: 67.72 GiB measured on one GPU, 65.7 at 1 byte throughout).
    Both are counted, untied (as in Llama, and Qwen above 4B).
    """
    assert model.num_params, "facts not resolved"
    vocab = 2 * (model.vocab_size or 0) * (model.hidden_size or 0)
    vocab = min(vocab, model.num_params)
    sixteen = 4 if load_dtype(model, strategy) == DType.float32 else 2
    element = bpp if strategy.quantization == Quantization.none else sixteen
    return vocab * element, (model.num_params - vocab) * bpp


def weights_per_gpu_bytes(model: ModelConfig, strategy: StrategyConfig, bpp: float) -> float:
    """Weights of the largest pipeline stage, split by tensor parallel.

    The layers split evenly (the first stages take the remainder); the first stage holds the
    embedding table and the last the LM head, so with pp >= 2 a stage carries a share of the
    layers plus one of them (Llama-3.1-8B at pp 4: 4.26 GiB measured, not the 3.74 of an even
    split).
    """
    tp, pp = strategy.tensor_parallel_size, strategy.pipeline_parallel_size
    vocab, body = split_bytes(model, strategy, bpp)
    if pp == 1:
        return (vocab + body) / tp
    layers = model.num_layers or 1
    stage_layers = -(-layers // pp)
    return (body * stage_layers / layers + vocab / 2) / tp


def vllm_batch_limits(strategy: StrategyConfig, usable_gib: float, gpu_type: str | None):
    """``max_num_batched_tokens`` and ``max_num_seqs``: ``strategy.engine_args`` else vLLM's
    defaults for its LLM class (what lm-eval builds): 16384 and 1024 on a GPU of 70 GiB or
    more that is not an A100, else 8192 and 256 (vLLM's EngineArgs)."""
    args: dict[str, Any] = dict(strategy.engine_args or {})
    big = usable_gib >= 70 and "A100" not in (gpu_type or "").upper()
    tokens = int(args.get("max_num_batched_tokens") or (16384 if big else 8192))
    seqs = int(args.get("max_num_seqs") or (1024 if big else 256))
    return tokens, seqs


def vllm_activation_gib(model: ModelConfig, tokens: int, seqs: int, version: str) -> float:
    """The activation peak of vLLM's profile run: a forward pass of ``tokens`` tokens, then its
    sampler over one logit row per sequence (at most ``seqs``, at most ``tokens``). The sampler's
    fp32 logits dominate, so the peak grows with the vocabulary and not with tp (the logits are
    gathered whole on each rank)."""
    hidden = tokens * (model.hidden_size or 0) * HIDDEN_BYTES_PER_TOKEN
    logits = min(seqs, tokens) * (model.vocab_size or 0) * SAMPLER_BYTES_PER_LOGIT
    peak = ACTIVATION_BASE_GIB + (hidden + logits) / GIB
    if release(version) < LEANER_ACTIVATIONS_SINCE:
        peak *= OLDER_ACTIVATION_FACTOR
    return peak


def non_torch_gib(strategy: StrategyConfig) -> float:
    """Memory outside torch on one GPU: NCCL's buffers dominate with tensor parallel."""
    tp, pp = strategy.tensor_parallel_size, strategy.pipeline_parallel_size
    if tp >= 2:
        return NCCL_BASE_GIB + NCCL_PER_RANK_GIB * tp
    return NON_TORCH_PIPELINE_GIB if pp >= 2 else NON_TORCH_ONE_GPU_GIB


def cuda_graph_gib(model: ModelConfig, strategy: StrategyConfig) -> float:
    """vLLM's CUDA-graph estimate for one GPU; none when the engine runs eagerly."""
    if strategy.enforce_eager:
        return 0.0
    stage_layers = -(-(model.num_layers or 0) // strategy.pipeline_parallel_size)
    return GRAPH_BASE_GIB + GRAPH_PER_LAYER_GIB * stage_layers


def vllm_terms(
    model: ModelConfig,
    strategy: StrategyConfig,
    bpp: float,
    limits: tuple[int, int],
    version: str = PLANNED_VLLM,
) -> GpuTerms:
    """vLLM's terms on one GPU for the release ``version``."""
    tokens, seqs = limits
    return GpuTerms(
        weights=weights_per_gpu_bytes(model, strategy, bpp) / GIB,
        activation=vllm_activation_gib(model, tokens, seqs, version),
        non_torch=non_torch_gib(strategy),
        cuda_graph=cuda_graph_gib(model, strategy),
        graphs_in_budget=release(version) >= GRAPHS_IN_BUDGET_SINCE,
    )


def hf_terms(model: ModelConfig, strategy: StrategyConfig, bpp: float) -> GpuTerms:
    """The HF engine's terms: its CUDA context and an activation allowance; no pool, no graphs.

    The allowance stays the flat figure the planner had: the honest peak (the logits of a whole
    ``max_model_len`` sequence, 16-bit plus lm-eval's fp32 log-softmax: 35 GiB for Qwen3-30B at
    its 40,960-token context) would refuse deployments that run, since lm-eval's requests are
    far shorter than the context; modelling it needs the requests' lengths (not yet planned).
    """
    return GpuTerms(
        weights=weights_per_gpu_bytes(model, strategy, bpp) / GIB,
        activation=HF_ACTIVATION_GIB,
        non_torch=HF_CONTEXT_GIB,
        cuda_graph=0.0,
        graphs_in_budget=False,
    )
