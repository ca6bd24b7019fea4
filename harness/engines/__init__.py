"""Engines that serve a model to lm-eval: one table, ``kind -> factory + where it lives +
preflight``, and the wings that place an engine (``inprocess``, ``process``, ``ray``, and
``remote``: a model served over HTTP).

``build_engine`` loads the engine the plan names; ``engine_problems`` asks the same entry what it
cannot do here before anything is loaded. Both read the plan only: nothing here imports torch,
vLLM or Ray until an engine is really built. Every engine speaks ``harness.engines.base``'s
protocol.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from harness.config.schema import EngineKind
from harness.engines.base import Engine, load_factory

if TYPE_CHECKING:
    from harness.planning.plan import Plan

OnCluster = Callable[[], None] | None
"""Called once a Ray cluster is up, before the model loads (telemetry then follows its nodes)."""


@dataclass(frozen=True)
class EngineEntry:
    """One engine kind: what builds it, where it lives, and what it checks before it is built."""

    factory: str
    """``"module:Class"`` of the engine, built from one replica's plan (``Class(plan)``): the
    same class in this process, in a process of its own, or in each Ray replica."""
    own_process: bool
    """Always built in a process of its own (vLLM: it cannot build a second ``LLM`` in a process
    that held one, and its processes must die with it); else where ``plan.replica_backend``
    says."""
    preflight: Callable[[Plan], list[str]]
    """What this engine cannot do here (not installed, a build that lacks a feature), each with
    its fix; reads metadata only, so it costs no import of the engine's library."""


def _hf_preflight(plan: Plan) -> list[str]:
    return []  # torch and transformers are the harness's own dependencies


def _vllm_preflight(plan: Plan) -> list[str]:
    from harness.engines.vllm_support.preflight import vllm_problems  # vLLM is not imported

    return vllm_problems(plan)


def _endpoint_preflight(plan: Plan) -> list[str]:
    from harness.engines.remote.probe import endpoint_problems  # probes the server

    return endpoint_problems(plan)


ENGINES: dict[str, EngineEntry] = {
    EngineKind.hf.value: EngineEntry(
        "harness.engines.inprocess.hf:HFEngine", own_process=False, preflight=_hf_preflight
    ),
    EngineKind.vllm.value: EngineEntry(
        "harness.engines.inprocess.vllm:VLLMEngine", own_process=True, preflight=_vllm_preflight
    ),
    EngineKind.endpoint.value: EngineEntry(
        "harness.engines.remote.engine:EndpointEngine",
        own_process=False,
        preflight=_endpoint_preflight,
    ),
}
"""Every engine kind the schema's ``EngineKind`` names."""


def engine_problems(plan: Plan) -> list[str]:
    """What the planned engine cannot do here, before anything is loaded (real runs only:
    plan-only mode plans any engine without it installed).

    The engine's own preflight (vLLM: installed, as the build the plan's device needs, asked only
    for what that build can do); a deployment over several nodes needs vLLM's Ray executor and
    the nodes (a SLURM allocation or ``ray.address``); Ray replicas need Ray.
    """
    from harness.engines.ray.multinode import multinode_problems

    problems = multinode_problems(plan)
    if plan.replica_backend == "ray":
        from harness.engines.ray.cluster import ray_dp_problems  # Ray is not imported

        problems += ray_dp_problems(plan)
    # strategy.engine_args' keys: checked by the plan (harness.planning.preflight)
    return problems + ENGINES[plan.engine].preflight(plan)


def build_engine(plan: Plan, on_cluster: OnCluster = None) -> Engine:
    """Load the model as the plan says; called once per run.

    Where the engine lives is the plan's ``replica_backend`` (the table's ``own_process`` engines
    never in this process): ``inline`` this process, ``process`` one of its own, ``ray`` one Ray
    actor per replica (``harness.engines.ray.replicas``), the planner's choice for
    ``data_parallel_size`` > 1. One engine over several nodes joins its Ray cluster first.

    Args:
        plan: the run's resolved plan (engine kind, device, tp/pp/dp, seed, Ray cluster).
        on_cluster: called once a Ray cluster is up, before the model loads (the run's
            telemetry then samples the cluster's other nodes through the load too).

    Returns:
        A resident engine; call ``close()`` when every dataset is done.
    """
    entry = ENGINES[plan.engine]
    if plan.engine == EngineKind.endpoint:  # served elsewhere: an HTTP client here
        from harness.engines.remote.engine import EndpointEngine, target_of

        return EndpointEngine(plan, target_of(plan))
    if plan.replica_backend == "ray":
        from harness.engines.ray.replicas import RayDPEngine

        return RayDPEngine(plan, entry.factory, entry.own_process, on_cluster)
    if not entry.own_process and plan.replica_backend != "process":
        engine: Engine = load_factory(entry.factory)(plan)
        return engine
    from harness.engines.process.engine import EngineProcess
    from harness.engines.ray.multinode import ClusteredEngine, spans_nodes

    def build() -> EngineProcess:
        return EngineProcess(entry.factory, plan, stall_timeout_s=plan.stall_timeout_s)

    if spans_nodes(plan):
        return ClusteredEngine(plan, build, on_cluster)
    return build()
