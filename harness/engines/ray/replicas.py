"""Data-parallel replicas: N persistent Ray actors, each holding one resident engine.

``strategy.data_parallel_size=N`` (``strategy=dp``) builds N replicas of the planned engine (the
table's factory, ``harness.engines.ENGINES``: the Hugging Face engine in the actor, or vLLM in a
process of its own inside it), once each, and keeps them for every dataset of the run. Each
``answer`` is split into N shards of about equal size (requests with the same context stay
together, as lm-eval's HF model batches them), the shards are answered at once, each replica
counting its own tokens, and the answers are put back in the original order. Only the ``args``
tuples cross to the actors. lm-eval's attributes come from ``ProxyLM``, the same thin proxy as
for an engine in its own process.

Why not lm-eval's own ``data_parallel_size``: its vLLM wrapper builds a new ``LLM`` inside a Ray
task on every call, and it cannot run on the CPU at all. Here each replica is built once; the
engine counts its builds (``describe()["builds"]``: N, plus one per replica rebuilt after dying).

On a GPU node each replica takes ``tp x pp`` GPUs (Ray sets its ``CUDA_VISIBLE_DEVICES``); on the
CPU, an equal share of the CPUs: Ray only counts CPUs, so on a local cluster each actor also pins
itself (and the engine process it starts) to CPUs of its own (``cpu_shares``); else every vLLM
replica would bind its OpenMP threads to the same first core (vLLM's ``auto`` binding reads the
affinity mask), and HF replicas would compete for all of them. Replicas are spread over the
cluster's nodes (``SPREAD``); the cluster itself (local, SLURM, or ``ray.address``) is
``harness.engines.ray.cluster``'s business.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from harness.config.schema import EngineKind
from harness.engines.base import (
    HEALTH_TIMEOUT_S,
    REQUEST_TYPES,
    Answered,
    EngineDied,
    EngineError,
    RemoteEngine,
    StallWatch,
    load_factory,
    stalled,
)
from harness.engines.process.serving import as_args, as_requests, serve
from harness.engines.ray.cluster import Needs, RayCluster, connect, needs_of, wait_timeout
from harness.engines.ray.output import actor_logs_to_stderr
from harness.engines.ray.shards import cpu_shares, shard
from harness.machine.slurm import slurm_allocation

if TYPE_CHECKING:
    from harness.planning.plan import Plan

log = logging.getLogger(__name__)

# ---------------------------------------------------------------- the actor


class Replica:
    """One resident engine inside a Ray actor (made remote by ``RayDPEngine``).

    Args:
        factory: ``"module:Class"`` of the engine (the table's).
        args: its arguments (they pickle: one replica's plan).
        own_process: build it in a child process of the actor (``EngineProcess``: vLLM, whose
            EngineCore and workers must die with it); else in the actor itself (HF).
        cpus: the CPUs this replica may use (its share of the node); None: whatever Ray gives.
        env: environment variables for its engine (vLLM's thread binding within ``cpus``).
    """

    def __init__(
        self,
        factory: str,
        args: tuple[Any, ...],
        own_process: bool,
        cpus: Sequence[int] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        from harness.engines.process.engine import EngineProcess

        actor_logs_to_stderr()  # forwarded to the driver's log (harness.engines.ray.output)
        if cpus:  # the actor, and the engine process it starts, inherit the mask
            os.sched_setaffinity(0, cpus)
        self.env = dict(env or {})
        os.environ.update(self.env)  # before the engine (and its processes) start
        if own_process:
            self.engine: Any = EngineProcess(factory, *args)
        else:
            self.engine = load_factory(factory)(*args)
        self.builds = 1

    def answer(self, op: str, args: list[tuple[Any, ...]]) -> Answered:
        """This replica's shard, answered with its token counts."""
        answered: Answered = self.engine.answer(op, as_requests(args))
        return answered

    def serve(self, op: str, payload: Any) -> Any:
        """Any other operation (the health check, an attribute, describe)."""
        if isinstance(self.engine, RemoteEngine):
            return self.engine.call(op, payload)
        return serve(self.engine, op, payload)

    def describe(self) -> dict[str, Any]:
        import ray

        context = ray.get_runtime_context()
        return {
            **self.engine.describe(),
            "node_id": context.get_node_id(),
            "actor_pid": os.getpid(),
            "replica_builds": self.builds,
            "cpus": sorted(os.sched_getaffinity(0)),
            "env": self.env,
        }

    def close(self) -> None:
        if self.engine is not None:
            self.engine.close()
            self.engine = None


# ---------------------------------------------------------------- the harness side

_PER_REPLICA = ("node_id", "actor_pid", "pid", "replica_builds", "cpus", "env", "threads_bind")
"""Facts of one replica, listed under ``replicas`` rather than taken from replica 0."""


def _cpus_here() -> int:
    return len(os.sched_getaffinity(0))


class RayDPEngine:
    """``data_parallel_size`` replicas of one engine behind the ``RemoteEngine`` protocol.

    Args:
        plan: the run's plan (``plan.data_parallel_size`` replicas; the cluster to join).
        factory: ``"module:Class"`` each replica builds (the table's entry for ``plan.engine``).
        own_process: each replica builds it in a process of its own (the table's entry).
        on_cluster: called once the cluster is up, before the replicas load.
        args: the factory's arguments; by default one replica's plan (data_parallel_size 1).
            Tests pass a stand-in's.
    """

    def __init__(
        self,
        plan: Plan,
        factory: str,
        own_process: bool,
        on_cluster: Callable[[], None] | None = None,
        args: tuple[Any, ...] | None = None,
    ) -> None:
        import ray

        self.factory, self.own_process = factory, own_process
        self.args = (replace(plan, data_parallel_size=1),) if args is None else args
        self.size = plan.data_parallel_size
        self.stall = StallWatch(plan.stall_timeout_s)
        """The stall watchdog's limit, grown with the slowest call answered."""
        self.builds = 0
        """Replica engines built so far: N, plus one per replica rebuilt."""
        self.closed = False
        self.actors: list[Any] = []
        self.cluster: RayCluster = connect(plan.ray_address, _cpus_here())
        try:
            self.needs = self._await_resources(plan)
            if on_cluster is not None:  # e.g. telemetry samplers on the other nodes
                on_cluster()
            self._remote = ray.remote(Replica).options(
                scheduling_strategy="SPREAD", max_restarts=0, **self.needs.per_replica
            )
            # Ray counts CPUs but does not pin them: on this node, each replica gets its own.
            self.shares: list[list[int] | None] = [None] * self.size
            self.envs: list[dict[str, str]] = [{} for _ in range(self.size)]
            if self.cluster.how == "local" and plan.device != "cuda":
                shares = cpu_shares(sorted(os.sched_getaffinity(0)), self.size)
                self.shares = list(shares)
                if plan.engine == EngineKind.vllm.value:
                    from harness.engines.vllm_support.cpu import replica_environment

                    self.envs = [replica_environment(plan, s) for s in shares]
            self.actors = [self._start_replica(i) for i in range(self.size)]
            self.builds = len(self.actors)
            self.replicas: list[dict[str, Any]] = self._get(
                [a.describe.remote() for a in self.actors]
            )
        except BaseException:
            self.close()
            raise
        from harness.engines.process.proxy import ProxyLM  # imports lm-eval

        self.lm: Any = ProxyLM(self)

    def _start_replica(self, index: int) -> Any:
        share, env = self.shares[index], self.envs[index]
        return self._remote.remote(self.factory, self.args, self.own_process, share, env)

    def _await_resources(self, plan: Plan) -> Needs:
        needs = needs_of(plan, _cpus_here())
        alloc = slurm_allocation()
        if self.cluster.how.startswith("slurm") and alloc is not None:
            needs.nodes = max(needs.nodes, len(alloc.nodes))
        if self.cluster.how != "local" and plan.device != "cuda":
            # another cluster: each CPU replica takes 1 CPU first, then its share once all is up
            needs = Needs(self.size, 0, needs.nodes, {"num_cpus": 1})
        self.cluster.wait_for(needs, wait_timeout(plan))
        if self.cluster.how != "local" and plan.device != "cuda":
            cpus, _, _ = self.cluster.resources()
            needs.per_replica = {"num_cpus": max(1, int(cpus // self.size))}
        return needs

    # -- requests

    def _get(self, refs: list[Any], timeout: float | None = None) -> list[Any]:
        import ray
        from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

        try:
            return list(ray.get(refs, timeout=timeout))
        except RayActorError as err:
            raise EngineDied(f"a data-parallel replica died: {err}") from err
        except RayTaskError as err:
            cause = err.cause if isinstance(err.cause, BaseException) else err
            if isinstance(cause, EngineDied | EngineError):
                raise cause from err
            raise EngineError(type(cause).__name__, str(cause), str(err)) from err
        except GetTimeoutError as err:
            raise TimeoutError(f"a data-parallel replica gave no answer within {timeout}s") from err

    def call(self, op: str, payload: Any = None, timeout: float | None = None) -> Any:
        """One operation but a request batch: the health check to every replica, the rest to
        replica 0."""
        if self.closed:
            raise EngineDied("the engine is closed")
        if op == "ping":
            return self._get([a.serve.remote(op, None) for a in self.actors], timeout)[0]
        return self._get([self.actors[0].serve.remote(op, payload)], timeout)[0]

    def answer(self, op: str, requests: Sequence[Any]) -> Answered:
        """The requests sharded over every replica and answered at once, back in their order.
        No answer within the stall limit is a stalled engine: every replica is killed, and
        ``EngineDied`` raised."""
        if op not in REQUEST_TYPES:
            raise ValueError(f"unknown request type {op!r}: one of {', '.join(REQUEST_TYPES)}")
        if self.closed:
            raise EngineDied("the engine is closed")
        args = as_args(requests)
        busy = [(i, idx) for i, idx in enumerate(shard(args, len(self.actors))) if idx]
        refs = [self.actors[i].answer.remote(op, [args[j] for j in idx]) for i, idx in busy]
        limit, began = self.stall.limit, time.monotonic()
        try:
            parts: list[Answered] = self._get(refs, limit)
        except TimeoutError as err:  # the stall watchdog: no answer, however long it waits
            self.kill()
            raise stalled(limit) from err
        self.stall.answered(time.monotonic() - began)
        merged = Answered([None] * len(args), [0] * len(args), [0] * len(args))
        for (_, idx), part in zip(busy, parts, strict=True):
            for at, j in enumerate(idx):
                merged.answers[j] = part.answers[at]
                merged.prompt_tokens[j] = part.prompt_tokens[at]
                merged.generated_tokens[j] = part.generated_tokens[at]
        return merged

    # -- health

    def check(self, timeout: float = HEALTH_TIMEOUT_S) -> None:
        self.call("ping", None, timeout=timeout)

    def revive(self, rebuild: bool = True) -> bool:
        """Ping every replica; rebuild the dead ones (when ``rebuild`` allows). True if any was."""
        import ray

        rebuilt = False
        for i, actor in enumerate(self.actors):
            try:
                self._get([actor.serve.remote("ping", None)], HEALTH_TIMEOUT_S)
            except (EngineDied, TimeoutError) as err:
                if not rebuild or self.closed:
                    raise
                log.warning("replica %d unhealthy (%s): rebuilding it", i, err)
                ray.kill(actor)
                self.actors[i] = self._start_replica(i)
                self.builds += 1
                self.replicas[i] = self._get([self.actors[i].describe.remote()])[0]
                rebuilt = True
        return rebuilt

    def kill(self) -> None:
        """End every replica at once (a stalled one cannot be told which; ``revive`` rebuilds)."""
        import ray

        for actor in self.actors:
            with contextlib.suppress(Exception):
                ray.kill(actor)

    # -- the Engine protocol

    def describe(self) -> dict[str, Any]:
        first = {k: v for k, v in self.replicas[0].items() if k not in _PER_REPLICA}
        return {
            **first,
            "data_parallel": "ray",
            "data_parallel_size": self.size,
            "builds": self.builds,
            "cluster": self.cluster.how,
            "nodes": len({r["node_id"] for r in self.replicas}),
            "replicas": [
                {
                    "node_id": r["node_id"],
                    "pid": r["actor_pid"],
                    "engine_pid": r.get("pid"),
                    "cpus": r.get("cpus"),
                    "env": r.get("env", {}),
                    **self.needs.per_replica,
                }
                for r in self.replicas
            ],
        }

    def close(self, timeout: float = 60.0) -> None:
        """Close every replica's engine, end the actors, and leave the cluster (stopping the
        Ray processes this run started). Safe to call more than once."""
        if self.closed:
            return
        self.closed = True
        import ray

        try:
            if self.actors:
                refs = [a.close.remote() for a in self.actors]
                try:
                    ray.get(refs, timeout=timeout)
                except Exception as err:  # dead or hung: killed just below
                    log.warning("closing replicas: %s", err)
                for actor in self.actors:
                    ray.kill(actor)
        finally:
            self.actors = []
            self.cluster.close()
