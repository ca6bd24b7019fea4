"""Will it fit? The memory-fit plan of a deployment, computed before any GPU is touched.

Per GPU: the largest stage's weights / tp + KV cache for ``max_model_len x concurrent_seqs`` tokens
(split across ranks) + the engine's own terms (activation peak, memory outside torch, CUDA graphs;
planning/memory_terms.py), against the GPU's usable memory (planning/gpu_catalogue.py) x
``gpu_memory_utilization``. Pure Python over
the typed configs: no torch, no vLLM, so plan-only mode answers in well under a second.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from harness.config.rules import deployment_problems
from harness.config.schema import (
    EngineKind,
    ExecutorBackend,
    ModelConfig,
    ReplicaBackend,
    RunConfig,
    StrategyConfig,
    TierConfig,
    load_dtype,
)
from harness.planning.gpu_catalogue import usable_gpu_gib
from harness.planning.memory import (
    Memory,
    estimate_memory,
    served_elsewhere,
)
from harness.planning.memory_terms import CALIBRATED_VLLM, CALIBRATION_SOURCE, PLANNED_VLLM
from harness.secrets import mask

AUTO_TIERS = ("small", "medium", "large", "xlarge")
"""The order ``tier=auto`` tries."""


@dataclass
class Plan:
    """A concrete deployment of one model on one tier, and whether it fits."""

    model: str
    strategy: str
    tier: str
    engine: str
    device: str
    tensor_parallel_size: int
    pipeline_parallel_size: int
    data_parallel_size: int
    quantization: str
    dtype: str
    """The dtype the weights are loaded in (the strategy's, else the model's native one)."""
    executor_backend: str
    """vLLM's launcher of its tp/pp workers (``mp``, ``ray``); ``none`` for the HF engine."""
    replica_backend: str
    """Where each engine replica lives: ``inline`` (this process), ``process`` (its own),
    ``ray`` (one Ray actor each)."""
    gpus_needed: int
    nodes_needed: int
    gpus_available: int
    max_model_len: int
    concurrent_seqs: int
    memory: Memory
    threads_per_rank: int = 0
    """CPU threads each rank computes with, for a deployment on the CPU (0 on GPUs)."""
    stall_timeout_s: float = 0.0
    """The stall watchdog's limit: an engine of its own process that answers nothing for this
    long while a dataset runs is killed and rebuilt (``strategy.stall_timeout_s``, else
    ``stall_timeout``; never below ``stall_floor``: a value asked below it is refused). The
    limit the watchdog starts from: it grows with the slowest call answered in the run."""
    datasets_at_once: int = 1
    """How many datasets are evaluated at once against the one engine (``max_concurrent_datasets``
    resolved: ``auto`` is every dataset of the run for an engine that lives outside this process,
    else 1; a number is that number, at most the run's datasets). The loop runs the smaller of it
    and the datasets left to evaluate."""
    batch_size: int | str = 32
    """What the engine batches by: ``strategy.batch_size`` for the HF engine and an endpoint (a
    number, or ``auto``: searched once per request shape, the sizes found in summary.json's
    ``engine``), ``auto`` for vLLM (it schedules every request of a call itself)."""
    seed: int | None = None
    """The run's seed, as the engine is built with it (``seed``; None: the engine's default)."""
    ray_address: str | None = None
    """The Ray cluster to join (``ray.address``); None: one is started for the run."""
    ray_wait_timeout_s: float | None = None
    """How long to wait for a Ray cluster's nodes and resources (``ray.wait_timeout_s``); None:
    the engine's default."""
    model_facts: dict[str, Any] = field(default_factory=dict)
    """The model figures planned from (pretrained, layers, heads, parameters, dtype, ...)."""
    engine_args: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments the engine's lm-eval model is built with beyond what the plan derives:
    ``strategy.engine_args`` and the run's reasoning settings (``enable_thinking``,
    ``think_end_token``, ``chat_template_args``)."""
    problems: list[str] = field(default_factory=list)
    """Broken rules and the reason it does not fit, each with its fix; empty when it fits."""
    bad_input: list[str] = field(default_factory=list)
    """The problems that are bad input (the config's own rules, outside the deployment), also in
    ``problems``: such a plan is refused (plan-only exits 2, as a run does), not "does not fit"."""
    explanation: str = ""
    """One line on how ``auto`` chose the strategy or tier."""
    notes: list[str] = field(default_factory=list)
    """Things worth knowing that are not problems (trust_remote_code on, ...)."""
    strategy_config: StrategyConfig | None = field(default=None, repr=False)
    """The concrete strategy planned (what ``strategy=auto`` chose); the engine is built from it."""
    model_config: ModelConfig | None = field(default=None, repr=False)
    """The model as planned: its facts read from the checkpoint where it has one."""

    @property
    def fits(self) -> bool:
        return not self.problems

    @property
    def strategy_used(self) -> StrategyConfig:
        """The concrete strategy (a plan made by ``make_plan`` always has it)."""
        assert self.strategy_config is not None, "the plan has no resolved strategy"
        return self.strategy_config

    @property
    def model_used(self) -> ModelConfig:
        """The model as planned (a plan made by ``make_plan`` always has it)."""
        assert self.model_config is not None, "the plan has no resolved model"
        return self.model_config

    def to_dict(self) -> dict[str, Any]:
        """The plan as plain data (``plan.json``, ``summary.json["plan"]``, MLflow's ``plan.*``)."""
        out = asdict(self)
        out.pop("strategy_config")
        out.pop("model_config")
        out["fits"] = self.fits
        out["memory"]["fits"] = self.memory.fits
        return out


REMOTE = "remote"
"""The device and replica backend of an endpoint: the model runs on a server elsewhere."""


def device_of(strategy: StrategyConfig, tier: TierConfig) -> str:
    """``cuda`` or ``cpu``: an ``auto`` device means the tier's GPUs if it has any; ``remote``
    for an endpoint (the server's devices are its own)."""
    if strategy.engine == EngineKind.endpoint:
        return REMOTE
    if strategy.device.value != "auto":
        return strategy.device.value
    return "cuda" if tier.gpus_per_node > 0 else "cpu"


def memory_notes(strategy: StrategyConfig, tier: TierConfig, device: str) -> list[str]:
    """What a GPU plan's memory figures rest on: the usable GPU memory, and for vLLM the release
    its terms were calibrated on."""
    if device != "cuda":
        return []
    _, usable = usable_gpu_gib(tier)
    notes = [usable] if usable else []
    if strategy.engine == EngineKind.vllm:
        notes.append(
            f"memory terms for vLLM {strategy.vllm_version or PLANNED_VLLM} "
            f"(strategy.vllm_version), calibrated on vLLM {CALIBRATED_VLLM} "
            f"({CALIBRATION_SOURCE}); planned against measured in benchmarks/RESULTS.md, "
            "'Planner calibration'."
        )
    return notes


def served_note(strategy: StrategyConfig) -> str:
    """What an endpoint's plan says instead of a memory fit."""
    url = mask(strategy.base_url or "(strategy.base_url, not set)")
    model = f"model id {strategy.model_id}" if strategy.model_id else "its only model"
    return (
        f"served at {url} ({model}, {strategy.api.value} API): nothing loads here; the server "
        "is probed (reachable, model id, context, tokenizer) before any dataset runs"
    )


def gpus_and_nodes(strategy: StrategyConfig, tier: TierConfig, device: str) -> tuple[int, int]:
    """GPUs the deployment takes, and the nodes they span.

    Tensor parallel stays within a node. Pipeline stages go one per node when the tier has the
    nodes: that is what pipeline parallel is for (vLLM's advice: tp within a node, pp across
    nodes; a deployment that fits one node is better served by a larger tp there), so
    ``tp4_pp2`` on two nodes of eight takes four GPUs on each rather than eight on one. On a
    tier of one node the stages share it.
    """
    if device != "cuda":
        return 0, 1
    tp, pp, dp = (
        strategy.tensor_parallel_size,
        strategy.pipeline_parallel_size,
        strategy.data_parallel_size,
    )
    gpus = tp * pp * dp
    if pp > 1 and tier.nodes >= pp * dp:
        return gpus, pp * dp
    per_node = max(tier.gpus_per_node, 1)
    return gpus, max(1, math.ceil(gpus / per_node))


def executor_of(strategy: StrategyConfig, device: str, nodes: int, gpus: int) -> str:
    """``mp`` within one node, ``ray`` across nodes; none for a single-device engine.

    vLLM's CPU build always runs ``mp``: an EngineCore process plus one process per rank.
    """
    if strategy.executor_backend != ExecutorBackend.auto:
        return strategy.executor_backend.value
    if strategy.engine in (EngineKind.hf, EngineKind.endpoint):
        return "none"  # the rules refuse any other value for them
    if device != "cuda":
        return "mp"
    if gpus <= 1:
        return "none"
    return "mp" if nodes == 1 else "ray"


def replica_backend_of(strategy: StrategyConfig) -> str:
    """Where a replica lives: the strategy's choice, else ``ray`` for several replicas, else
    ``inline`` for the HF engine (the embedded default's fast path) and ``process`` for vLLM
    (always a process of its own)."""
    if strategy.engine == EngineKind.endpoint:
        return REMOTE  # an HTTP client here; the rules refuse any other value
    if strategy.replica_backend != ReplicaBackend.auto:
        return strategy.replica_backend.value
    if strategy.data_parallel_size > 1:
        return "ray"
    return "inline" if strategy.engine == EngineKind.hf else "process"


def datasets_at_once(run: RunConfig, replica_backend: str) -> int:
    """How many datasets are evaluated at once: ``max_concurrent_datasets``, where ``auto`` is
    every dataset of the run for an engine outside this process (its own process, Ray actors:
    their requests merge into its batches) and 1 for one in this process; never more than the
    run's datasets. A value the config's rules refuse (``config_problems``) plans as 1."""
    datasets = max(1, len(run.dataset))
    wanted = run.max_concurrent_datasets
    if wanted == "auto":
        return datasets if replica_backend in ("process", "ray", REMOTE) else 1
    if isinstance(wanted, int) and not isinstance(wanted, bool) and wanted >= 1:
        return min(wanted, datasets)
    return 1


def cpu_threads_per_rank(
    engine: EngineKind, ranks: int, cpus: int, limit: int | None = None
) -> int:
    """Threads each rank of a CPU deployment gets: an equal share of the CPUs; a single vLLM
    rank leaves one core to its EngineCore (vLLM's own x86 default); the HF engine takes all.
    ``limit`` (the user's ``OMP_NUM_THREADS``, :func:`user_threads`) caps it."""
    share = max(1, cpus - 1) if engine == EngineKind.vllm and ranks == 1 else max(1, cpus // ranks)
    return min(share, limit) if limit else share


def user_threads(environ: Mapping[str, str] | None = None) -> int | None:
    """The ``OMP_NUM_THREADS`` the user set (its outer level when it lists several, ``4,2``);
    None when unset or not a positive whole number (OpenMP ignores such a value too)."""
    value = (os.environ if environ is None else environ).get("OMP_NUM_THREADS", "")
    first = value.split(",")[0].strip()
    return int(first) if first.isdigit() and int(first) > 0 else None


def planned_threads(strategy: StrategyConfig, tier: TierConfig) -> tuple[int, str | None]:
    """Threads per rank of a CPU deployment, and a note when the user's ``OMP_NUM_THREADS``
    lowered them: a user who set it (a shared machine, a job beside others) asked for no more."""
    ranks = strategy.tensor_parallel_size * strategy.pipeline_parallel_size
    cpus = max(1, tier.cpus_per_task // strategy.data_parallel_size)  # each replica's share
    share = cpu_threads_per_rank(strategy.engine, ranks, cpus)
    threads = cpu_threads_per_rank(strategy.engine, ranks, cpus, user_threads())
    if threads == share:
        return share, None
    return threads, (
        f"OMP_NUM_THREADS={threads} is set: {threads} thread(s) per rank, not the {share} its "
        f"{cpus} CPU(s) would give. Unset it (or raise it) to use them."
    )


def make_plan(
    run: RunConfig, strategy: StrategyConfig, tier: TierConfig, explanation: str = ""
) -> Plan:
    """Plan one concrete strategy on one concrete tier and check every rule of it."""
    model = run.model
    assert model.context_window, "facts not resolved"
    device = device_of(strategy, tier)
    max_len = strategy.max_model_len or model.context_window
    gpus, nodes = gpus_and_nodes(strategy, tier, device)
    if device == REMOTE:
        memory = served_elsewhere(model, strategy)
    else:
        release = str(strategy.vllm_version or PLANNED_VLLM)
        memory = estimate_memory(model, strategy, tier, device, max_len, vllm_version=release)
    problems = deployment_problems(model, strategy, tier, device, gpus, nodes)
    if not memory.fits and (device != "cuda" or tier.gpus_per_node > 0):
        problems.append(_does_not_fit(memory, device, tier, max_len))
    notes = memory_notes(strategy, tier, device)
    on_cpu = device == "cpu"
    threads, capped = planned_threads(strategy, tier) if on_cpu else (0, None)
    notes += [capped] if capped else []
    if device == REMOTE:
        notes.append(served_note(strategy))
    at_once = datasets_at_once(run, replica_backend_of(strategy))
    stall_s, _ = stall_limit(strategy, model.num_params, device, at_once)  # refused: preflight
    if model.trust_remote_code:
        notes.append(
            f"trust_remote_code is ON for {model.name}: the checkpoint's own Python code will run."
        )
    return Plan(
        model=model.name,
        strategy=strategy.name,
        tier=tier.name,
        engine=strategy.engine.value,
        device=device,
        tensor_parallel_size=strategy.tensor_parallel_size,
        pipeline_parallel_size=strategy.pipeline_parallel_size,
        data_parallel_size=strategy.data_parallel_size,
        quantization=strategy.quantization.value,
        dtype=load_dtype(model, strategy).value,
        executor_backend=executor_of(strategy, device, nodes, gpus),
        replica_backend=replica_backend_of(strategy),
        gpus_needed=gpus,
        nodes_needed=nodes,
        gpus_available=tier.gpus_per_node * tier.nodes,
        max_model_len=max_len,
        concurrent_seqs=strategy.concurrent_seqs,
        memory=memory,
        threads_per_rank=threads,
        stall_timeout_s=stall_s,
        batch_size="auto" if strategy.engine.value == "vllm" else strategy.batch_size,
        seed=run.seed,
        ray_address=run.ray.address,
        ray_wait_timeout_s=run.ray.wait_timeout_s,
        datasets_at_once=at_once,
        model_facts={k: getattr(v, "value", v) for k, v in asdict(model).items()},
        problems=problems,
        explanation=explanation,
        notes=notes,
        strategy_config=strategy,
        model_config=model,
    )


STALL_BASE_S = 300.0
"""The stall watchdog's floor: a first vLLM request warms the engine up (3-25 s measured on two
CPU cores), and one slice of requests is sized to take about 5 s (harness/evaluation/journaled)."""
STALL_PER_BILLION_S = 5.0
"""More per billion parameters: a slice's first batch of a large model takes longer."""


def stall_timeout(num_params: int | None, device: str) -> float:
    """The default stall limit: 300 s plus 5 s per billion parameters (a 70B model: 650 s),
    four times that on the CPU, where a forward pass is that much slower."""
    billions = (num_params or 0) / 1e9
    limit = STALL_BASE_S + STALL_PER_BILLION_S * billions
    return round(limit * (4 if device == "cpu" else 1), 1)


FIRST_REQUEST_S = 25.0
"""A fresh vLLM engine's first request warms it up (3-25 s measured on two CPU cores), inside the
first slice's time."""
SLICE_ALLOWANCE = 3
"""How many times ``journal_slice_s`` the watchdog allows one slice: slices are sized to take
``journal_slice_s`` from the throughput measured, and a slower stretch must not read as a stall."""


def stall_floor(strategy: StrategyConfig, datasets_at_once: int) -> float:
    """The least stall limit a healthy engine never trips: each of the slices merged into one
    call (one per dataset in flight) allowed ``SLICE_ALLOWANCE`` times ``journal_slice_s``, plus
    a vLLM engine's warm-up on its first. An endpoint's limit times each request, not a slice:
    no floor."""
    if strategy.engine == EngineKind.endpoint:
        return 0.0
    warm_up = FIRST_REQUEST_S if strategy.engine == EngineKind.vllm else 0.0
    slices = SLICE_ALLOWANCE * strategy.journal_slice_s * max(1, datasets_at_once)
    return round(warm_up + slices, 1)


def stall_limit(
    strategy: StrategyConfig, num_params: int | None, device: str, datasets_at_once: int
) -> tuple[float, str | None]:
    """The watchdog's limit (``strategy.stall_timeout_s``, else ``stall_timeout`` raised to
    ``stall_floor``), and the refusal of a limit asked below the floor (None when none): a
    limit the user typed is kept as typed or refused with the fix, never changed behind them
    (docs/reliability.md). During the run the watchdog's limit grows with the slowest call
    answered (``engines/base.StallWatch``)."""
    floor = stall_floor(strategy, datasets_at_once)
    asked = strategy.stall_timeout_s
    if not asked:
        return max(stall_timeout(num_params, device), floor), None
    if asked >= floor:
        return float(asked), None
    warm_up = f", plus {FIRST_REQUEST_S:g} s of vLLM warm-up" if strategy.engine == "vllm" else ""
    fewer = " or max_concurrent_datasets=1," if datasets_at_once > 1 else ""
    return float(asked), (
        f"strategy.stall_timeout_s={asked:g}: below the {floor:g} s a healthy engine may need "
        f"for one call ({datasets_at_once} slice(s) of about strategy.journal_slice_s="
        f"{strategy.journal_slice_s:g} s, each allowed {SLICE_ALLOWANCE}x{warm_up}); the stall "
        f"watchdog would kill it mid-slice. Fix: strategy.stall_timeout_s={floor:g} or more "
        f"(or null: scaled from the model's size),{fewer} or a smaller strategy.journal_slice_s."
    )


def _does_not_fit(memory: Memory, device: str, tier: TierConfig, max_len: int) -> str:
    where = "per GPU" if device == "cuda" else "of host memory"
    text = (
        f"does not fit: needs {memory.needed:.1f} GiB {where} (weights "
        f"{memory.weights_per_gpu:.1f} + KV cache {memory.kv_cache:.1f} + overhead "
        f"{memory.overhead:.1f}) but tier '{tier.name}' allows {memory.budget:.1f} GiB."
    )
    spare = memory.budget - memory.weights_per_gpu - memory.overhead
    if memory.kv_cache > 0.1 * memory.needed and spare > 0:
        text += (
            f" The KV cache of {max_len} tokens is a large part: strategy.max_model_len="
            f"{memory.kv_capacity_tokens} or less would fit."
        )
    return text
