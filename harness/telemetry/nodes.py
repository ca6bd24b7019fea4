"""Every node of a Ray cluster sampled: one sampler actor pinned to each node, its recording sent
back to the run and labelled by node.

For engines that span nodes (vLLM with the ``ray`` executor backend): once the engine's cluster
is up, ``NodeSamplers.start`` puts a ``NodeSampler`` on every alive node (``num_cpus=0``, pinned
with ``NodeAffinitySchedulingStrategy(soft=False)``), the run's phase marks are forwarded to each
(in order: Ray runs one caller's calls to an actor in the order they were made), and ``stop``
gathers the recordings. A node without GPUs or NVML answers why, and is left out. Ray is
imported only here, and only when this is used.
"""

from __future__ import annotations

import logging
import socket
from typing import Any

from harness.telemetry.sampler import Recording, Sampler, open_sampler

log = logging.getLogger(__name__)


class NodeSampler:
    """The actor's body: a ``Sampler`` of the node it runs on."""

    def __init__(self, interval_s: float) -> None:
        found = open_sampler(interval_s)
        self.sampler: Sampler | None = None if isinstance(found, str) else found
        self.why_not = found if isinstance(found, str) else None

    def start(self) -> dict[str, Any]:
        """Start sampling; returns the node's host name, Ray node id and GPUs (or why none)."""
        import ray

        if self.sampler is not None:
            self.sampler.start()
        return {
            "host": socket.gethostname(),
            "node_id": ray.get_runtime_context().get_node_id(),
            "gpus": len(self.sampler.recording.gpus) if self.sampler else 0,
            "why_not": self.why_not,
        }

    def mark(self, phase: str | None) -> None:
        if self.sampler is not None:
            self.sampler.mark(phase)

    def stop(self) -> dict[str, Any] | None:
        """The recording as plain data (it crosses the process boundary), or None."""
        return self.sampler.stop().to_dict() if self.sampler is not None else None


class NodeSamplers:
    """One ``NodeSampler`` actor per node of the connected Ray cluster."""

    def __init__(self, actors: list[Any], nodes: list[dict[str, Any]]) -> None:
        self.actors = actors
        self.nodes = nodes
        """What each actor reported at start: host, node_id, gpus, why_not."""

    @classmethod
    def start(
        cls, interval_s: float, env: dict[str, str] | None = None, skip_local: bool = False
    ) -> NodeSamplers:
        """Put a sampler on every alive node of the cluster ``ray.init`` connected to.

        Args:
            interval_s: seconds between readings.
            env: environment variables for the actors (``runtime_env``'s ``env_vars``).
            skip_local: leave out the driver's own node (the run's ``Telemetry`` samples it).
        """
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        remote = ray.remote(num_cpus=0, max_restarts=0)(NodeSampler)
        local = ray.get_runtime_context().get_node_id()
        actors: list[Any] = []
        for node in ray.nodes():
            if not node.get("Alive") or (skip_local and node["NodeID"] == local):
                continue
            options: dict[str, Any] = {
                "scheduling_strategy": NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
            }
            if env:
                options["runtime_env"] = {"env_vars": dict(env)}
            actors.append(remote.options(**options).remote(interval_s))
        nodes = ray.get([a.start.remote() for a in actors], timeout=120)
        for node in nodes:
            if node["why_not"]:
                log.info("no GPU telemetry on node %s: %s", node["host"], node["why_not"])
        return cls(actors, nodes)

    def mark(self, phase: str | None) -> None:
        """Forward a phase mark to every node (without waiting for it)."""
        for actor in self.actors:
            actor.mark.remote(phase)

    def stop(self, timeout_s: float = 120) -> list[Recording]:
        """Every node's recording, each labelled ``<host>`` (``<host>-<node id>`` where several
        nodes, the run's own included, share a host name); the actors are ended afterwards."""
        import ray

        try:
            found = ray.get([a.stop.remote() for a in self.actors], timeout=timeout_s)
        except Exception as err:  # a lost node: its series are lost, not the run
            log.warning("GPU telemetry of the other nodes lost (%s: %s)", type(err).__name__, err)
            found = [None] * len(self.actors)
        for actor in self.actors:
            try:
                ray.kill(actor)
            except Exception as err:  # Ray already down: nothing left to end
                log.info("sampler actor not killed (%s: %s)", type(err).__name__, err)
        hosts = [n["host"] for n in self.nodes] + [socket.gethostname()]  # the run's own node
        recordings = []
        for node, data in zip(self.nodes, found, strict=True):
            if data is None:
                continue
            rec = Recording.from_dict(data)
            shared = hosts.count(node["host"]) > 1
            rec.node = f"{node['host']}-{node['node_id'][:8]}" if shared else node["host"]
            recordings.append(rec)
        return recordings
