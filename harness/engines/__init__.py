"""Engines that serve a model to lm-eval; ``build_engine`` picks one from the plan."""

from __future__ import annotations

from typing import TYPE_CHECKING

from harness.config.schema import EngineKind, RunConfig
from harness.engines.base import Engine

if TYPE_CHECKING:
    from harness.plan import Plan


def build_engine(run: RunConfig, plan: Plan) -> Engine:
    """Load the model as the plan says; called once per run.

    The Hugging Face engine is built in this process (the embedded default's fast path); vLLM in
    a process of its own (``harness.engines.process``), so that closing it, or the harness dying,
    leaves none of vLLM's processes behind. ``data_parallel_size`` > 1: that many replicas of
    either, each resident in a Ray actor (``harness.engines.ray_dp``).

    Args:
        run: the validated run configuration.
        plan: its resolved deployment plan (engine kind, device, tp/pp/dp, executor backend).

    Returns:
        A resident engine; call ``close()`` when every dataset is done.
    """
    if plan.data_parallel_size > 1:  # N resident replicas as Ray actors, any engine kind
        from harness.engines.ray_dp import RayDPEngine

        return RayDPEngine(run, plan)
    if plan.engine == EngineKind.hf.value:
        from harness.engines.hf import HFEngine

        return HFEngine(run)
    if plan.engine == EngineKind.vllm.value:
        from harness.engines.process import EngineProcess

        return EngineProcess("harness.engines.vllm:VLLMEngine", run, plan)
    # validation refuses other engines before we get here.
    raise ValueError(f"engine {plan.engine!r} is not available")
