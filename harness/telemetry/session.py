"""What a run holds: the sampler started before the load, phases marked from the run's events,
and at the end the files and MLflow records.

``load_started`` begins phase ``load`` and ``loaded`` ends it; ``dataset_started`` begins the
dataset's phase and ``dataset_done`` or ``dataset_failed`` ends it (a resumed dataset is not
evaluated and has no phase). Every failure here is a warning: telemetry never ends an evaluation.

A run on an endpoint (``strategy=endpoint``) watches the server's GPUs where the server runs on
this node (those of its ``CUDA_VISIBLE_DEVICES``, else every GPU: ``engines/remote/place.py``),
and samples nothing where it runs elsewhere; the record says which (``endpoint``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.console import say
from harness.telemetry.attribute import SEPARATOR, attribute
from harness.telemetry.sampler import Recording, Sampler, open_sampler

if TYPE_CHECKING:
    from harness.config.schema import TelemetryConfig
    from harness.engines.remote.place import ServerPlace
    from harness.planning.plan import Plan
    from harness.record.outcome import DatasetOutcome
    from harness.telemetry.nodes import NodeSamplers

log = logging.getLogger(__name__)


class Telemetry:
    """The run's GPU telemetry: this node's sampler and, once ``follow_nodes`` is called, the other
    nodes' (every method a no-op when there is nothing to sample)."""

    def __init__(
        self,
        sampler: Sampler | None,
        title: str = "",
        interval_s: float | None = None,
        endpoint: str | None = None,
    ) -> None:
        self.sampler = sampler
        """This node's sampler; None without GPUs or NVML."""
        self.title = title
        """The plot's title (model, strategy)."""
        self.nodes: NodeSamplers | None = None
        """The samplers of the cluster's other nodes, once ``follow_nodes`` is called."""
        self.phase: str | None = None
        """The phase now running."""
        self._in_flight: list[str] = []
        """The datasets being evaluated now, in the order they started."""
        self.recordings: list[Recording] = []
        """What every node recorded, this node's first; filled by ``stop``."""
        self.stopped = False
        self.interval_s = interval_s
        """Seconds between readings; None when telemetry is off."""
        self.endpoint = endpoint
        """For a run on an endpoint: what is watched of its server (``ServerPlace.telemetry``)."""

    @classmethod
    def start(cls, config: TelemetryConfig, plan: Plan) -> Telemetry:
        """Start sampling every GPU of this node, or say in the log why not.

        The "no GPU" line reaches the console only when the plan runs on GPUs (then it matters);
        otherwise it is in the log file alone.
        """
        if not config.enabled:
            say("telemetry: off (telemetry.enabled=false)", show=False)
            return cls(None)
        place = _endpoint_place(plan)
        endpoint = place.telemetry() if place is not None else None
        if place is not None and not place.on_this_node:
            say(f"telemetry: {endpoint}", show=False)
            return cls(None, interval_s=config.interval_s, endpoint=endpoint)
        found = open_sampler(config.interval_s, visible=place.visible if place else None)
        if isinstance(found, str):
            on_gpus = plan.device == "cuda"
            say(f"telemetry: no GPU telemetry on this node: {found}; the run goes on", show=on_gpus)
            return cls(None, interval_s=config.interval_s, endpoint=endpoint)
        found.start()
        gpus = found.recording.gpus
        say(
            f"telemetry: sampling {len(gpus)} GPU(s) ({', '.join(sorted({g.name for g in gpus}))})"
            f" every {config.interval_s:g}s",
            show=False,
        )
        title = f"{plan.model} | {plan.strategy}"
        return cls(found, title=title, interval_s=config.interval_s, endpoint=endpoint)

    def follow_cluster(self) -> None:
        """Sample the other nodes of the Ray cluster this process is connected to, if it has any
        (an engine over several nodes calls this once its cluster is up, before the load).

        Never raises: without the other nodes' series the run goes on.
        """
        if self.interval_s is None or self.nodes is not None:
            return
        try:
            import ray

            if len([n for n in ray.nodes() if n.get("Alive")]) < 2:
                return
            from harness.telemetry.nodes import NodeSamplers

            self.follow_nodes(NodeSamplers.start(self.interval_s, skip_local=True))
        except Exception as err:
            log.warning(
                "no GPU telemetry from the other nodes (%s: %s); the run goes on",
                type(err).__name__,
                err,
            )

    def follow_nodes(self, nodes: NodeSamplers) -> None:
        """Also record the other nodes of a Ray cluster (an engine spanning nodes calls this once
        its cluster is up; ``NodeSamplers.start(..., skip_local=True)``)."""
        self.nodes = nodes
        if self.phase is not None:
            nodes.mark(self.phase)

    def on_event(self, event: str, fields: dict[str, Any]) -> None:
        """Mark phases from the run's events (an ``EventLog`` listener). Datasets in flight
        together make one phase named after all of them (``a+b``; harness/telemetry/attribute.py
        splits it among them)."""
        if event == "dataset_started":
            self._in_flight.append(str(fields.get("dataset")))
        elif event in ("dataset_done", "dataset_failed"):
            with contextlib.suppress(ValueError):
                self._in_flight.remove(str(fields.get("dataset")))
        elif event == "load_started":
            self.phase = "load"
        elif event == "loaded":
            self.phase = None
        else:
            return
        if event.startswith("dataset_"):
            self.phase = SEPARATOR.join(self._in_flight) or None
        if self.sampler is not None:
            self.sampler.mark(self.phase)  # never raises: an NVML error stops the sampler
        if self.nodes is not None:
            try:
                self.nodes.mark(self.phase)
            except Exception as err:  # Ray gone: the other nodes' phases end here, not the run
                log.warning(
                    "GPU telemetry of the other nodes stopped (%s: %s)", type(err).__name__, err
                )
                self.nodes = None

    def stop(self) -> None:
        """Stop sampling, here and on the other nodes (idempotent); before the engine closes,
        whose Ray cluster the other nodes' samplers run on."""
        if self.stopped:
            return
        self.stopped = True
        if self.sampler is not None:
            self.recordings.append(self.sampler.stop())
        if self.nodes is not None:
            self.recordings.extend(self.nodes.stop())

    def record(self, root: Path, outcomes: Sequence[DatasetOutcome]) -> dict[str, Any] | None:
        """Write telemetry.json/csv/png to ``root`` (``harness.tracking.rundir`` logs them);
        returns what summary.json keeps (None when nothing was sampled)."""
        self.stop()
        said = {"endpoint": self.endpoint} if self.endpoint else {}
        if not self.recordings:
            return said or None
        try:
            return said | self._record(root, outcomes, self.recordings)
        except Exception as err:  # telemetry must never end the run
            log.warning("GPU telemetry could not be recorded (%s: %s)", type(err).__name__, err)
            return said | {"error": f"{type(err).__name__}: {err}"}

    def _record(
        self,
        root: Path,
        outcomes: Sequence[DatasetOutcome],
        recs: list[Recording],
    ) -> dict[str, Any]:
        from harness.record.rundir import RunDirectory
        from harness.telemetry import export
        from harness.telemetry.summary import summarize

        marked = recs[0].phases  # this node's marks (the first node's, when this one has none)
        phases = summarize(recs, marked)
        tokens = {
            o.name: o.prompt_tokens + o.generated_tokens
            for o in outcomes
            if o.status == "ok" and not o.resumed
        }
        attributed = attribute(phases, tokens)  # datasets in flight together: each its share
        per_joule = export.tokens_per_joule(attributed, tokens)
        described = export.describe(recs, phases, per_joule, attributed)
        files = export.write_files(root, recs, marked, described)
        try:
            from harness.telemetry.plot import plot

            where = ", ".join(rec.node for rec in recs)
            png = RunDirectory(root).telemetry_png
            files.append(plot(recs, marked, png, f"{self.title} | {where}"))
        except Exception as err:  # a missing or broken matplotlib costs the plot only
            log.warning("telemetry plot not drawn (%s: %s)", type(err).__name__, err)

        return {
            "nodes": [rec.node for rec in recs],
            "gpus": sum(len(rec.gpus) for rec in recs),
            "readings": sum(len(rec.samples) for rec in recs),
            "stopped_early": {rec.node: rec.error for rec in recs if rec.error},
            "sampler_thread_cpu_s": round(sum(rec.thread_cpu_s for rec in recs), 4),
            "phase_marks_s": round(sum(rec.mark_s for rec in recs), 4),
            "files": [p.name for p in files],
            "phases": {
                p.name: {
                    "duration_s": round(p.duration_s, 3),
                    "peak_memory_gib": round(p.peak_memory_gib, 3),
                    "energy_j": None if p.energy_j is None else round(p.energy_j, 3),
                    "tokens_per_joule": per_joule.get(p.name),
                }
                for p in attributed
            },
            "shared_phases": [p.name for p in phases if SEPARATOR in p.name],
        }


def _endpoint_place(plan: Plan) -> ServerPlace | None:
    """Where a ``strategy=endpoint`` plan's server runs (None for any other plan)."""
    if plan.engine != "endpoint" or not plan.strategy_used.base_url:
        return None
    base_url = plan.strategy_used.base_url
    from harness.engines.remote.place import place_of

    return place_of(base_url)
