"""Engines that serve a model to lm-eval; ``build_engine`` picks one from the plan."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from harness.config.schema import EngineKind, RunConfig
from harness.engines.base import Engine

if TYPE_CHECKING:
    from harness.plan import Plan


def on_ray(plan: Plan) -> bool:
    """The engine runs as Ray replicas: ``data_parallel_size`` > 1 (any engine), or the Hugging
    Face engine with ``executor_backend=ray`` (one replica or more)."""
    hf_on_ray = plan.engine == EngineKind.hf.value and plan.executor_backend == "ray"
    return plan.data_parallel_size > 1 or hf_on_ray


def build_engine(
    run: RunConfig, plan: Plan, on_cluster: Callable[[], None] | None = None
) -> Engine:
    """Load the model as the plan says; called once per run.

    Where the engine lives:

    - vLLM: always a process of its own (``harness.engines.process``), so that closing it, or
      the harness dying, leaves none of vLLM's processes behind; its ``executor_backend`` is
      vLLM's own (how it starts its tp/pp workers).
    - Hugging Face: this process (the embedded default's fast path) unless ``executor_backend``
      says otherwise: ``mp``, a child process (as vLLM); ``ray``, Ray replicas.
    - ``data_parallel_size`` > 1: that many replicas of either, each resident in a Ray actor
      (``harness.engines.ray_dp``).
    - one vLLM engine over several nodes: its Ray cluster first, then vLLM with its Ray executor
      on it (``harness.engines.multinode``).

    Args:
        run: the validated run configuration.
        plan: its resolved deployment plan (engine kind, device, tp/pp/dp, executor backend).
        on_cluster: called once a Ray cluster is up, before the model loads (the run's
            telemetry then samples the cluster's other nodes through the load too).

    Returns:
        A resident engine; call ``close()`` when every dataset is done.
    """
    if on_ray(plan):
        from harness.engines.ray_dp import RayDPEngine

        return RayDPEngine(run, plan, on_cluster=on_cluster)
    if plan.engine == EngineKind.hf.value:
        if plan.executor_backend == "mp":
            from harness.engines.process import EngineProcess

            return EngineProcess("harness.engines.hf:HFEngine", run)
        from harness.engines.hf import HFEngine

        return HFEngine(run)
    if plan.engine == EngineKind.vllm.value:
        from harness.engines.multinode import ClusteredEngine, spans_nodes
        from harness.engines.process import EngineProcess

        def build() -> Engine:
            return EngineProcess("harness.engines.vllm:VLLMEngine", run, plan)

        if spans_nodes(plan):
            return ClusteredEngine(run, plan, build, on_cluster)
        return build()
    # validation refuses other engines before we get here.
    raise ValueError(f"engine {plan.engine!r} is not available")
