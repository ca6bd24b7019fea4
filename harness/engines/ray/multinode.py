"""One engine across several nodes: vLLM's Ray executor on the cluster this run starts or joins.

vLLM spreads a deployment over nodes itself (``distributed_executor_backend="ray"``: pipeline
stages one per node, tensor parallel within each), but only onto a Ray cluster that is already
there; it calls ``ray.init()`` and takes whatever it finds. So before the engine is built this
run brings the cluster up the same way data-parallel replicas do (``cluster``: ``ray.address``,
or inside a SLURM allocation node 0 starts the head and the other nodes' tasks join it), waits
until it has the GPUs and nodes the plan needs (an error naming what is missing,
not a vLLM placement-group hang), and points the engine's process at it with ``RAY_ADDRESS``.
Closing the engine stops the cluster's head when this run started it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from harness.engines.base import HEALTH_TIMEOUT_S, Answered, EngineDied, RemoteEngine
from harness.engines.ray.cluster import Needs, connect, ray_installed, wait_timeout
from harness.machine.slurm import slurm_allocation

if TYPE_CHECKING:
    from harness.engines.ray.cluster import RayCluster
    from harness.planning.plan import Plan

log = logging.getLogger(__name__)


def spans_nodes(plan: Plan) -> bool:
    """One engine (no data-parallel replicas) that the plan puts on more than one node."""
    return plan.nodes_needed > 1 and plan.data_parallel_size == 1


def multinode_problems(plan: Plan) -> list[str]:
    """What stops a deployment over several nodes from starting here, before anything loads."""
    if not spans_nodes(plan):
        return []
    who = (
        f"strategy '{plan.strategy}' (tp {plan.tensor_parallel_size} x pp "
        f"{plan.pipeline_parallel_size}) spans {plan.nodes_needed} nodes"
    )
    problems = []
    if plan.engine != "vllm" or plan.executor_backend != "ray":
        problems.append(
            f"{who}, which only vLLM's Ray executor can do (engine {plan.engine}, executor "
            f"{plan.executor_backend}). Fix: strategy.executor_backend=ray with a vLLM strategy "
            "(strategy=tp4_pp2), or a strategy that fits one node."
        )
    if not ray_installed():
        problems.append(f'{who} over Ray, which is not installed. Fix: pip install -e ".[ray]".')
    alloc = slurm_allocation()
    have = len(alloc.nodes) if alloc is not None else 1
    if not plan.ray_address and have < plan.nodes_needed:
        problems.append(
            f"{who}, but this process is on {have} node(s) with no Ray cluster to join. Fix: "
            f"send it to SLURM (python -m harness -m ... hydra/launcher=slurm asks for "
            f"{plan.nodes_needed} nodes), or ray.address=<head:port> of a cluster that has them."
        )
    return problems


class ClusteredEngine:
    """An engine built after its Ray cluster is up, closed before the cluster is stopped; every
    call goes to that engine (in its own process: a ``RemoteEngine``).

    Args:
        plan: the run's plan (``spans_nodes(plan)``; ``ray_address``, ``ray_wait_timeout_s``).
        build: builds the engine (in its own process) once the cluster is up.
        on_cluster: called once the cluster is up, before the load (the run's telemetry starts
            a sampler on each other node then, so their ``load`` phase is recorded too).
    """

    def __init__(
        self,
        plan: Plan,
        build: Callable[[], RemoteEngine],
        on_cluster: Callable[[], None] | None = None,
    ) -> None:
        import ray

        self.cluster: RayCluster = connect(plan.ray_address, len(os.sched_getaffinity(0)))
        self._old_address = os.environ.get("RAY_ADDRESS")
        self.engine: RemoteEngine | None = None
        try:
            needs = Needs(cpus=0, gpus=plan.gpus_needed, nodes=plan.nodes_needed)
            self.cluster.wait_for(needs, wait_timeout(plan))
            self.nodes = [n["NodeManagerAddress"] for n in self.cluster.alive_nodes()]
            # The engine's process is spawned from this one: vLLM's ray.init() joins this cluster.
            os.environ["RAY_ADDRESS"] = ray.get_runtime_context().gcs_address
            log.info("Ray cluster up (%s): nodes %s", self.cluster.how, ", ".join(self.nodes))
            if on_cluster is not None:
                on_cluster()
            self.engine = build()
        except BaseException:
            self.close()
            raise
        self.lm: Any = self.engine.lm

    def _built(self) -> RemoteEngine:
        if self.engine is None:
            raise EngineDied("the engine is closed")
        return self.engine

    def answer(self, op: str, requests: Sequence[Any]) -> Answered:
        return self._built().answer(op, requests)

    def call(self, op: str, payload: Any = None, timeout: float | None = None) -> Any:
        return self._built().call(op, payload, timeout)

    def check(self, timeout: float = HEALTH_TIMEOUT_S) -> None:
        self._built().check(timeout)

    def revive(self, rebuild: bool = True) -> bool:
        return self._built().revive(rebuild)

    def kill(self) -> None:
        self._built().kill()

    def __getattr__(self, name: str) -> Any:  # the engine's own facts: builds, pid, alive ...
        engine = self.__dict__.get("engine")
        if engine is None:
            raise AttributeError(name)
        return getattr(engine, name)

    def describe(self) -> dict[str, Any]:
        facts = self.engine.describe() if self.engine is not None else {}
        return {**facts, "ray_cluster": self.cluster.how, "nodes": self.nodes}

    def close(self) -> None:
        """Close the engine, then the cluster (its head too, when this run started it)."""
        try:
            if self.engine is not None:
                self.engine.close()
        finally:
            if self._old_address is None:
                os.environ.pop("RAY_ADDRESS", None)
            else:
                os.environ["RAY_ADDRESS"] = self._old_address
            self.cluster.close()
