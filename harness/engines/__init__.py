"""Engines that serve a model to lm-eval: one table, ``kind -> factory + preflight``.

``build_engine`` loads the engine the plan names; ``engine_problems`` asks the same entry what it
cannot do here before anything is loaded. Both read the plan only: nothing here imports torch,
vLLM or Ray until an engine is really built.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from harness.config.schema import EngineKind, RunConfig
from harness.engines.base import Engine

if TYPE_CHECKING:
    from harness.planning.plan import Plan

OnCluster = Callable[[], None] | None
"""Called once a Ray cluster is up, before the model loads (telemetry then follows its nodes)."""


@dataclass(frozen=True)
class EngineEntry:
    """One engine kind: how it is built, and what it checks before it is."""

    build: Callable[[RunConfig, Plan, OnCluster], Engine]
    """Load the model as the plan says (one replica; data parallel wraps it in Ray actors)."""
    preflight: Callable[[Plan, RunConfig], list[str]]
    """What this engine cannot do here (not installed, a build that lacks a feature), each with
    its fix; reads metadata only, so it costs no import of the engine's library."""


def on_ray(plan: Plan) -> bool:
    """The engine runs as Ray replicas (``replica_backend=ray``: the planner's choice for
    ``data_parallel_size`` > 1, or the user's for one replica of either engine)."""
    return plan.replica_backend == "ray"


def _build_hf(run: RunConfig, plan: Plan, on_cluster: OnCluster) -> Engine:
    # This process (the embedded default's fast path), or a process of its own.
    if plan.replica_backend == "process":
        from harness.engines.process import EngineProcess

        return EngineProcess(
            "harness.engines.hf:HFEngine", plan, stall_timeout_s=plan.stall_timeout_s
        )
    from harness.engines.hf import HFEngine

    return HFEngine(plan)


def _hf_preflight(plan: Plan, run: RunConfig) -> list[str]:
    return []  # torch and transformers are the harness's own dependencies


def _build_vllm(run: RunConfig, plan: Plan, on_cluster: OnCluster) -> Engine:
    # Always a process of its own, so that closing it, or the harness dying, leaves none of
    # vLLM's processes behind; over several nodes, its Ray cluster first.
    from harness.engines.multinode import ClusteredEngine, spans_nodes
    from harness.engines.process import EngineProcess

    def build() -> Engine:
        return EngineProcess(
            "harness.engines.vllm:VLLMEngine", plan, run.seed, stall_timeout_s=plan.stall_timeout_s
        )

    if spans_nodes(plan):
        return ClusteredEngine(run, plan, build, on_cluster)
    return build()


def _vllm_preflight(plan: Plan, run: RunConfig) -> list[str]:
    from harness.engines.vllm_preflight import vllm_problems  # metadata only: vLLM is not imported

    return vllm_problems(plan, run)


ENGINES: dict[str, EngineEntry] = {
    EngineKind.hf.value: EngineEntry(_build_hf, _hf_preflight),
    EngineKind.vllm.value: EngineEntry(_build_vllm, _vllm_preflight),
}
"""Every engine kind the schema's ``EngineKind`` names."""


def engine_problems(plan: Plan, run: RunConfig) -> list[str]:
    """What the planned engine cannot do here, before anything is loaded (real runs only:
    plan-only mode plans any engine without it installed).

    The engine's own preflight (vLLM: installed, as the build the plan's device needs, asked only
    for what that build can do); a deployment over several nodes needs vLLM's Ray executor and
    the nodes (a SLURM allocation or ``ray.address``); Ray replicas need Ray.
    """
    from harness.engines.multinode import multinode_problems

    problems = multinode_problems(plan, run)
    if on_ray(plan):
        from harness.engines.cluster import ray_dp_problems  # Ray is not imported

        problems += ray_dp_problems(plan, run)
    from harness.engines.engine_args import unknown_problems

    given = run.strategy.engine_args
    if isinstance(given, Mapping):  # anything else is refused with the config
        problems += unknown_problems(plan.engine, given)
    return problems + ENGINES[plan.engine].preflight(plan, run)


def build_engine(run: RunConfig, plan: Plan, on_cluster: OnCluster = None) -> Engine:
    """Load the model as the plan says; called once per run.

    Where the engine lives is the plan's ``replica_backend``: ``inline`` (HF only) this process,
    ``process`` one of its own (vLLM always), ``ray`` one Ray actor per replica
    (``harness.engines.ray_dp``), the planner's choice for ``data_parallel_size`` > 1.

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
    return ENGINES[plan.engine].build(run, plan, on_cluster)
