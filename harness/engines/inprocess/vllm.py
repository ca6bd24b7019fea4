"""The distributed engine: lm-eval's own vLLM model, built from the resolved Plan.

It is meant to be built inside its own process (``harness.engines.process``): vLLM cannot
rebuild an ``LLM`` in a process that held one, and its EngineCore and workers must die with it.
Which build is installed lives in ``vllm_support.install``, the CPU build's placement in
``vllm_support.cpu``, the checks before loading in ``vllm_support.preflight``; everything here but
``VLLMEngine`` itself is importable without vLLM, so tests can check the keywords we pass against
a release's ``EngineArgs``.
"""

from __future__ import annotations

import logging
import os
import time
from typing import TYPE_CHECKING, Any

from harness.config.schema import Quantization
from harness.engines.base import AnswersInProcess, recordable
from harness.engines.vllm_support.cpu import (
    allowed_cpus,
    cpu_environment,
    cpu_kv_cache_bytes,
    threads_per_rank,
)
from harness.engines.vllm_support.install import (
    CPU_DIST,
    INSTALL,
    import_lm_eval_vllm,
    installed_vllm,
    vllm_version,
)
from harness.engines.vllm_support.startup import EXTENSION, startup_memory
from harness.paths import resolve_project_path

if TYPE_CHECKING:
    from harness.planning.plan import Plan

log = logging.getLogger(__name__)

QUANTIZATION = {
    Quantization.none: None,
    Quantization.fp8: "fp8",
    Quantization.int8: "int8_per_channel_weight_only",
    # int4 needs a pre-quantized (AWQ/GPTQ) checkpoint: vLLM reads the method from its config.
    Quantization.int4: None,
}
"""Our quantization names -> vLLM's ``quantization`` argument (online quantization at load)."""


def engine_kwargs(plan: Plan) -> dict[str, Any]:
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
    if plan.seed is not None:
        kwargs["seed"] = plan.seed
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
    return kwargs | plan.engine_args


CONFIG_PARTS = ("scheduler_config", "cache_config", "model_config", "parallel_config")
"""The parts of vLLM's ``VllmConfig`` where an ``EngineArgs`` field ends up."""


def engine_config(lm: Any, keys: list[str]) -> dict[str, Any]:
    """The values vLLM's engine holds for ``keys`` (``max_num_seqs`` in its scheduler config,
    ``enable_prefix_caching`` in its cache config, ...); a key found in none is left out."""
    config = getattr(getattr(getattr(lm, "model", None), "llm_engine", None), "vllm_config", None)
    found: dict[str, Any] = {}
    for key in keys:
        for part in CONFIG_PARTS:
            holder = getattr(config, part, None)
            if holder is not None and hasattr(holder, key):
                found[key] = recordable(getattr(holder, key))
                break
    return found


def worker_extension(plan: Plan, kwargs: dict[str, Any]) -> dict[str, str]:
    """vLLM's ``worker_extension_cls`` that lets harness read each worker's start-up memory
    (``vllm_support/startup.py``): not where the user set one of their own, nor for the ``ray``
    executor, whose workers on other nodes may not import harness (a worker that cannot import
    its extension fails the build)."""
    if "worker_extension_cls" in kwargs or plan.executor_backend == "ray":
        return {}
    return {"worker_extension_cls": EXTENSION}


class VLLMEngine(AnswersInProcess):
    """lm-eval's ``VLLM`` built once from the plan; lm-eval calls it for every dataset.

    Build it in its own process (``harness.engines.process.engine.EngineProcess``): closing it
    then frees everything, and vLLM's EngineCore and workers cannot outlive the run.
    """

    def __init__(self, plan: Plan) -> None:
        if installed_vllm() is None:
            raise RuntimeError(f"vLLM is not installed. Fix: {INSTALL[CPU_DIST]}")
        self.plan = plan
        self.kwargs = engine_kwargs(plan)
        self.cpus = allowed_cpus()
        self.env: dict[str, str] = {}
        if plan.device == "cpu":
            self.env = cpu_environment(plan, self.cpus, os.environ)
            os.environ.update(self.env)
        vllm_cls = import_lm_eval_vllm()
        log.info("building vLLM %s with %s (env %s)", vllm_version(), self.kwargs, self.env)
        extension = worker_extension(plan, self.kwargs)
        self.lm: Any = vllm_cls(**self.kwargs, **extension)
        self.startup_memory = self.read_startup_memory(bool(extension))

    def read_startup_memory(self, extended: bool) -> dict[str, Any]:
        """What vLLM took at start-up (``vllm_support/startup.py``); never fails the build."""
        asked = self.kwargs.get("kv_cache_memory_bytes") if self.plan.device == "cpu" else None
        started = time.perf_counter()
        try:
            report = startup_memory(getattr(self.lm, "model", None), self.plan.device, asked)
            report["read_s"] = round(time.perf_counter() - started, 4)  # the check's own cost
        except Exception as err:  # a figure we cannot read is reported missing, never fatal
            log.warning("vLLM's start-up memory not read: %s: %s", type(err).__name__, err)
            return {"not_reported": {"all": f"{type(err).__name__}: {err}"}}
        if not extended:
            report.setdefault("not_reported", {})["workers"] = (
                "the workers were not asked: strategy.engine_args sets worker_extension_cls, or "
                "they run on Ray (other nodes may not import harness)"
            )
        return report

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
        facts["startup_memory"] = self.startup_memory
        if self.plan.engine_args:  # what vLLM made of them, read back from its own config
            facts["engine_config"] = engine_config(self.lm, list(self.plan.engine_args))
        return facts

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
