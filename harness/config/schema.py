"""The run's schema: one dataclass per config group (``harness.config.store`` registers them).

Values live in conf/*.yaml; these classes give them types, so a misspelled key or a value of the
wrong type fails when Hydra composes the run, naming the key. Closed sets of choices are str-valued
Enums rather than ``Literal``: OmegaConf 2.3 rejects ``Literal`` annotations, while an Enum is
checked at compose time with the allowed values listed in the error.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from omegaconf import MISSING


class EngineKind(StrEnum):
    """Which engine serves the model."""

    hf = "hf"
    vllm = "vllm"
    endpoint = "endpoint"
    """A model already served over HTTP (an OpenAI-compatible server); nothing loads here."""


class EndpointApi(StrEnum):
    """Which OpenAI API an endpoint engine speaks: ``completions`` (all three request types,
    with prompt log-probabilities) or ``chat`` (generation only)."""

    completions = "completions"
    chat = "chat"


class DType(StrEnum):
    """Weight dtype as the engine loads it."""

    auto = "auto"
    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"


class Device(StrEnum):
    """Where the lightweight engine runs; ``auto`` picks CUDA when a GPU is visible."""

    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class Quantization(StrEnum):
    """Weight quantization applied by the engine at load time."""

    none = "none"
    int8 = "int8"
    fp8 = "fp8"
    int4 = "int4"


class ExecutorBackend(StrEnum):
    """How vLLM starts its tp/pp workers (vLLM's ``distributed_executor_backend``): ``mp`` on one
    node, ``ray`` across nodes."""

    auto = "auto"
    mp = "mp"
    ray = "ray"


class ReplicaBackend(StrEnum):
    """Where an engine replica lives: this process, a process of its own, or a Ray actor."""

    auto = "auto"
    inline = "inline"
    process = "process"
    ray = "ray"


class TrackingBackend(StrEnum):
    """Where metrics go."""

    mlflow = "mlflow"
    none = "none"


@dataclass
class ModelConfig:
    """Architecture facts of one model, enough to plan without the hub.

    A registry model states them in its YAML (with sources); a fact left null is read from the
    checkpoint's own config.json and safetensors headers (``model=hf``: every fact).
    """

    name: str = MISSING
    """Short name used in run names and MLflow (e.g. ``falcon_40b``)."""
    pretrained: str = MISSING
    """Hugging Face hub id, or a local directory: a relative path starts at the current
    directory, and a folder here wins over a hub id of its name (a bundled model's own path, in
    harness's conf/model/, is the project's); the plan records the absolute folder."""
    revision: str | None = None
    """Hub revision (branch, tag or commit); None takes the default branch."""
    num_params: int | None = None
    """Total parameter count (for MoE models, all experts); null: from the checkpoint."""
    num_active_params: int | None = None
    """Parameters used per token, for mixture-of-experts models; None for dense models."""
    num_layers: int | None = None
    """Transformer blocks; null: from the checkpoint."""
    hidden_size: int | None = None
    """Width of the residual stream; null: from the checkpoint."""
    num_attention_heads: int | None = None
    """Query heads per layer; null: from the checkpoint."""
    num_kv_heads: int | None = None
    """Key/value heads per layer (fewer than query heads under GQA/MQA); null: from checkpoint."""
    head_dim: int | None = None
    """Size of one attention head; null: from the checkpoint."""
    vocab_size: int | None = None
    """Tokenizer vocabulary size; null: from the checkpoint."""
    context_window: int | None = None
    """Longest sequence the model was trained for, in tokens; null: from the checkpoint."""
    dtype: DType | None = None
    """Native dtype of the released weights; null: from the checkpoint."""
    trust_remote_code: bool = False
    """Run model code shipped with the checkpoint; off unless the model config turns it on."""


COUNTED_FACTS = (
    "num_layers",
    "hidden_size",
    "num_attention_heads",
    "num_kv_heads",
    "head_dim",
    "vocab_size",
    "context_window",
)
"""The architecture's counts: the planner divides by them, so each must be positive."""


@dataclass
class StrategyConfig:
    """How the model is deployed: engine, parallelism and batching."""

    name: str = MISSING
    """Short name used in run names and MLflow (e.g. ``tp4``)."""
    engine: EngineKind = EngineKind.hf
    """Engine kind: ``hf`` (lm-eval's Hugging Face model, one device), ``vllm``, or
    ``endpoint`` (a model served over HTTP at ``base_url``)."""
    device: Device = Device.auto
    """Device for the ``hf`` engine."""
    dtype: DType = DType.auto
    """Dtype to load weights in; ``auto`` uses the model's native dtype."""
    tensor_parallel_size: int = 1
    """GPUs each layer is split across."""
    pipeline_parallel_size: int = 1
    """Pipeline stages (layers split across GPUs or nodes)."""
    data_parallel_size: int = 1
    """Independent model replicas, each with tp x pp GPUs."""
    quantization: Quantization = Quantization.none
    """Weight quantization at load time (``int8``, ``fp8``, ``int4``), or ``none``."""
    gpu_memory_utilization: float = 0.9
    """Fraction of each GPU's memory the engine may use (weights, KV cache, activations)."""
    vllm_version: str | None = None
    """The vLLM release the memory plan is made for (``0.19.0``): its terms moved between
    releases (activations fell at 0.17; CUDA graphs count in the budget since 0.21). Null: the
    pinned GPU build (``0.33.0``). Set it when the engine that runs is another release (a served
    endpoint's vLLM, a site's own build) so the plan's KV capacity is that release's."""
    executor_backend: ExecutorBackend = ExecutorBackend.auto
    """vLLM's launcher of its tp/pp workers; ``auto``: ``mp`` on one node, ``ray`` across nodes."""
    replica_backend: ReplicaBackend = ReplicaBackend.auto
    """Where each engine replica lives; ``auto``: ``inline`` (this process) for the HF engine,
    ``process`` (its own) for vLLM, ``ray`` (one actor per replica) when data_parallel_size > 1."""
    batch_size: Any = 32
    """Requests per forward pass for the ``hf`` engine: a number, ``auto`` (the largest that
    fits, found by lm-eval before the first batch), or ``auto:N`` (found again N times over a
    dataset), as lm-eval's --batch_size; vLLM schedules its batches itself; an endpoint sends
    this many prompts in one HTTP request (a number; chat: 1)."""
    max_batch_size: int | None = None
    """The largest batch ``batch_size=auto`` tries (lm-eval's --max_batch_size); null: 64, the
    HF engine's default."""
    max_model_len: int | None = None
    """Longest sequence the engine accepts; None takes the model's context window."""
    concurrent_seqs: int = 1
    """Full-length sequences the KV cache must hold at once (the plan's concurrency)."""
    enforce_eager: bool | None = None
    """vLLM: run eagerly (no torch.compile, no CUDA graphs); None means on for the CPU build,
    where compiling costs more than it saves, and off on GPUs."""
    kv_cache_dtype: str = "auto"
    """vLLM's KV cache dtype: ``auto`` follows the model; ``fp8`` halves it on GPUs with fp8."""
    auto: bool = False
    """Let the planner choose tp, pp and quantization: the smallest deployment that fits."""
    journal_slice_s: float = 5.0
    """About how long one slice of requests sent to the engine takes (the rest of a dataset's
    requests are journaled slice by slice): what a run killed mid-dataset loses, against the
    batching the engine loses at each slice's end. Sizes follow the throughput measured."""
    stall_timeout_s: float | None = None
    """The stall watchdog: an engine in a process of its own (or a replica) that answers no
    request for this long while a dataset runs is taken for dead, killed, rebuilt once and the
    dataset resumed from its request journal; null: scaled from the model's size and the
    device (the plan says the figure). A value below what one call of a healthy engine may take
    (3 x journal_slice_s per dataset in flight, +25 s for vLLM) is refused; during the run the
    limit grows to 3x the slowest call answered."""
    base_url: str | None = None
    """Endpoint: the OpenAI-compatible server's API root (``http://host:port/v1``), as lm-eval's
    ``base_url`` but without the route (``/completions`` is added); credentials in it are masked
    in every record."""
    api: EndpointApi = EndpointApi.completions
    """Endpoint: ``completions`` (loglikelihood, perplexity and generation) or ``chat``
    (generation only: a chat API returns no prompt log-probabilities)."""
    model_id: str | None = None
    """Endpoint: the model id the server serves (one of its ``/v1/models``; lm-eval's
    ``model``); null: the server's only model."""
    api_key_env: str = "OPENAI_API_KEY"
    """Endpoint: the environment variable holding the API key sent as a bearer token (lm-eval's
    ``OPENAI_API_KEY``); never the key itself, which is masked everywhere."""
    num_concurrent: int = 8
    """Endpoint: HTTP requests in flight at once (lm-eval's ``num_concurrent``); halved on a 429,
    grown back one by one as requests succeed."""
    max_retries: int = 5
    """Endpoint: tries of one HTTP request, the first included (lm-eval's ``max_retries``):
    timeouts, connection errors, 429 and 5xx are tried again with exponential backoff; a request
    still failing fails its dataset, never an answer."""
    timeout: float = 300.0
    """Endpoint: seconds one HTTP request may take (lm-eval's ``timeout``)."""
    retry_wait_s: float = 1.0
    """Endpoint: the first wait before a retry, doubled at each (at most 30 times it; a 429's
    ``Retry-After`` is obeyed up to that)."""
    tokenized_requests: bool = True
    """Endpoint, completions: send prompts as token ids from the model's tokenizer (lm-eval's
    ``tokenized_requests``; the tokens the in-process engines read); false sends text."""
    engine_args: Any = None
    """More keyword arguments for the engine, passed through as given and checked before
    loading against the installed engine's own (vLLM: ``max_num_seqs``, ``enable_prefix_caching``,
    ...; HF: HFLM's and ``attn_implementation``, ``device_map``, ...); a keyword the plan
    derives (tensor_parallel_size, dtype, ...) is refused, naming its setting."""


@dataclass
class TierConfig:
    """Resources one job may use."""

    name: str = MISSING
    """Short name (e.g. ``local``, ``large``)."""
    gpus_per_node: int = 0
    """GPUs on each node."""
    gpu_memory_gib: float = 0.0
    """Memory of one GPU, in GiB (an 80 GB A100/H100 has 80 GiB)."""
    gpu_type: str | None = None
    """GPU model (``A100``, ``H100``, ...); decides whether fp8 is available."""
    host_memory_gib: float = 8.0
    """Host memory of the job, in GiB."""
    cpus_per_task: int = 2
    """CPU cores of the job."""
    nodes: int = 1
    """Most nodes one job may span."""
    time_limit_min: int = 60
    """Wall-time limit of one job, in minutes."""
    max_concurrent_jobs: int = 1
    """Jobs of this tier that may run at once (SLURM array parallelism)."""
    partition: str | None = None
    """SLURM partition the jobs go to; None uses the cluster's default."""
    auto: bool = False
    """Let the planner pick the smallest tier the model fits (``tier=auto``)."""
    detected: bool = False
    """The values were measured on this node (``tier=local``), not written for another machine."""


@dataclass
class DatasetConfig:
    """One dataset of the run: an lm-eval task (or group) and how to evaluate it."""

    task: str = MISSING
    """lm-eval task or group name (bundled, from a task path, or built into lm-eval)."""
    num_fewshot: int | None = None
    """Few-shot examples in each prompt; None keeps the task's own default."""
    limit: float | None = None
    """Evaluate only this many examples (a fraction when below 1); None evaluates all."""
    task_path: str | None = None
    """Extra folder of lm-eval task YAMLs this dataset needs (relative to the project root)."""
    samples: list[int] | None = None
    """Only these documents (their indices in the evaluated split), as lm-eval's ``--samples``;
    not with ``limit``."""
    metadata: Any = None
    """lm-eval's ``--metadata`` for this dataset's tasks (RULER's ``max_seq_lengths``, ...); the
    model's ``pretrained`` is added where neither it nor ``tokenizer`` is given."""
    apply_chat_template: Any = None
    """This dataset's ``apply_chat_template``; None: the run's."""
    fewshot_as_multiturn: bool | None = None
    """This dataset's ``fewshot_as_multiturn``; None: the run's."""
    system_instruction: str | None = None
    """This dataset's ``system_instruction``; None: the run's."""
    gen_kwargs: Any = None
    """This dataset's ``gen_kwargs``, merged over the run's (its keys win)."""
    predict_only: bool | None = None
    """This dataset's ``predict_only``; None: the run's."""


@dataclass
class TrackingConfig:
    """Where the run's metrics and artifacts are recorded."""

    backend: TrackingBackend = TrackingBackend.mlflow
    """``mlflow`` or ``none``."""
    uri: str = MISSING
    """MLflow tracking URI: ``sqlite:///path.db``, a folder, or ``http://host:port``."""
    experiment: str = "harness"
    """MLflow experiment the runs go into."""
    artifact_location: str | None = None
    """Artifact root for a new experiment on a local store; None lets MLflow choose."""


@dataclass
class TelemetryConfig:
    """GPU telemetry: every GPU of the node read through NVML, per phase (harness/telemetry)."""

    enabled: bool = MISSING
    """Sample the node's GPUs during the run; a node without GPUs or NVML is noted in the log."""
    interval_s: float = MISSING
    """Seconds between readings."""


@dataclass
class RayConfig:
    """The Ray cluster data-parallel replicas run on (harness/engines/ray/cluster.py)."""

    address: str | None = None
    """Join this existing cluster (``ray://host:10001``, ``host:6379`` or ``auto``); None: the
    SLURM allocation's own cluster (node 0 starts the head) or a local one on this node."""
    wait_timeout_s: float | None = None
    """Longest wait for the cluster to have what the plan needs; None: scaled to the model."""


@dataclass
class RunConfig:
    """One run: a model deployed by a strategy on a tier, evaluated on datasets, tracked."""

    model: ModelConfig = MISSING
    """The model (config group ``model``)."""
    strategy: StrategyConfig = MISSING
    """The deployment (config group ``strategy``)."""
    tier: TierConfig = MISSING
    """The resources (config group ``tier``)."""
    dataset: dict[str, DatasetConfig] = field(default_factory=dict)
    """Datasets by name (config group ``dataset``; several with ``dataset=[a,b]``)."""
    tracking: TrackingConfig = MISSING
    """Tracking (config group ``tracking``)."""
    telemetry: TelemetryConfig = MISSING
    """GPU telemetry: telemetry.enabled, telemetry.interval_s (values in conf/config.yaml)."""
    ray: RayConfig = field(default_factory=RayConfig)
    """Ray cluster for data-parallel replicas: ray.address, ray.wait_timeout_s."""
    task_paths: list[str] = field(default_factory=list)
    """Extra folders of lm-eval task YAMLs, searched besides the bundled suite."""
    allowed_roots: list[str] = field(default_factory=list)
    """Folders besides the project and the current directory that task paths may lie under."""
    outputs_root: str = "outputs"
    """Folder for run directories and the local MLflow store."""
    output_dir: str | None = None
    """This run's directory; None uses Hydra's run directory."""
    offline: bool = True
    """Forbid hub downloads (HF_HUB_OFFLINE, HF_DATASETS_OFFLINE); false lets them happen."""
    seed: int | None = None
    """One seed for lm-eval's python, numpy, torch and few-shot sampling; None keeps lm-eval's
    own defaults (as its CLI does)."""
    max_concurrent_datasets: Any = "auto"
    """Datasets evaluated at once against the one resident engine, their requests merged into
    the engine's batches: a number of at least 1, or ``auto``: 1 for an engine in this process
    (the HF engine's default), every dataset of the run for an engine in a process of its own
    (vLLM, replicas). Metrics are the same either way."""
    bootstrap_iters: int = 1000
    """Bootstrap iterations lm-eval uses for stderr of non-mean metrics (0 turns them off)."""
    log_samples: bool = False
    """Also write lm-eval's per-sample records next to each dataset's result."""
    apply_chat_template: Any = False
    """Chat template around every prompt (lm-eval's --apply_chat_template): false, true (the
    tokenizer's), or the name of one of its templates; per dataset too."""
    fewshot_as_multiturn: bool | None = None
    """Few-shot examples as alternating chat turns (lm-eval's --fewshot_as_multiturn); null: on
    when a chat template is applied, as lm-eval does; true needs a chat template."""
    system_instruction: str | None = None
    """Text before every prompt, the system turn under a chat template (lm-eval's
    --system_instruction)."""
    gen_kwargs: Any = None
    """Generation settings of generation tasks (lm-eval's --gen_kwargs), updating each task's
    own: a mapping ({max_gen_toks: 256, until: [...]}) or lm-eval's 'k=v,...' string."""
    predict_only: bool = False
    """Generate and keep the outputs (samples/), compute no metric (lm-eval's --predict_only)."""
    enable_thinking: bool | None = None
    """Reasoning models: thinking on or off in the chat template (lm-eval's HF and vLLM
    ``enable_thinking``); null: the template's own default. True needs ``think_end_token``."""
    think_end_token: str | None = None
    """Reasoning models: the text after which the answer starts (``</think>``); what comes before
    it is stripped before scoring (lm-eval's ``think_end_token``)."""
    chat_template_args: Any = None
    """More keyword arguments for the tokenizer's chat template (lm-eval's
    ``chat_template_args``, e.g. ``{reasoning_effort: low}``)."""
    confirm_run_unsafe_code: bool = False
    """Let tasks marked unsafe_code (code execution: humaneval, mbpp) run the model's code on
    this machine (lm-eval's --confirm_run_unsafe_code)."""
    rerun: bool = False
    """Evaluate every dataset again, even those with a stored result from an earlier run."""
    journal_keep_days: float = 14.0
    """Days a request journal of another setting of a dataset (another batch size, engine,
    library version) is kept untouched before it is removed, when that dataset's result is
    next stored: its crashed run can resume from it until then (docs/reliability.md); 0 removes
    them at once."""
    attach: bool = True
    """Evaluate on a live service of yours (``python -m harness.serve``, under outputs_root)
    whose model and deployment are this run's instead of loading the model; false always loads
    (docs/services.md)."""
    plan_only: bool = False
    """Print the deployment plan, write plan.json, and stop: exit 0 if it fits, 1 if not."""
    verbose: bool = False
    """Show the full plan, lm-eval's INFO lines and progress bars (the last two on any terminal)."""


_STEP_FOLDER = re.compile(r"^(checkpoint|ckpt|step|global_step|iter|epoch)[-_]?\d+$", re.I)
"""A training step's folder name (``checkpoint-500``, ``global_step1000``, ``iter_0004000``):
every training run has one of the same name, so it names nothing on its own."""


def name_of(pretrained: str) -> str:
    """A run name for a checkpoint: its last path part, lower case, ``[a-z0-9_]`` only; a step
    folder (``runA/checkpoint-500``) is named with its parent (``runa_checkpoint_500``), so that
    two training runs' checkpoints of one step never share a run name. A path that starts with
    ``.`` or ``~`` is named by the folders it means (``./checkpoint-500`` typed in ``runA/``:
    ``runa_checkpoint_500``; ``.`` is the current directory's name)."""
    if pretrained.startswith((".", "~")):
        pretrained = os.path.abspath(os.path.expanduser(pretrained))
    parts = [p for p in pretrained.rstrip("/").split("/") if p]
    last = parts[-1] if parts else "model"
    if _STEP_FOLDER.match(last) and len(parts) > 1:
        last = f"{parts[-2]}_{last}"
    return re.sub(r"[^a-z0-9]+", "_", last.lower()).strip("_") or "model"


def load_dtype(model: ModelConfig, strategy: StrategyConfig) -> DType:
    """The dtype the weights are loaded in: the strategy's, else the model's native one."""
    if strategy.dtype != DType.auto:
        return strategy.dtype
    assert model.dtype is not None, "model facts not resolved"
    return model.dtype


def to_run_config(cfg: Any) -> RunConfig:
    """Turn a composed DictConfig into the typed RunConfig (interpolations resolved)."""
    from omegaconf import OmegaConf

    obj = OmegaConf.to_object(cfg)
    assert isinstance(obj, RunConfig)
    return obj
