"""summary.json as one type: what a run did, written by the finished run and built from the events
of a killed one, read by replay and a sweep's outcome table.

The file's shape (key names, nesting, value types) is the one every commit since the summary
began has written; ``RunSummary.from_dict`` reads a summary of an earlier commit too (a key it
lacks takes its default).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from harness.record.outcome import DatasetOutcome


@dataclass
class RunSummary:
    """What one run did: its plan, its times, each dataset's outcome, its telemetry and tracking."""

    model: str
    """The run's model name (``model.name``)."""
    strategy: str
    """The strategy as planned (what ``strategy=auto`` chose)."""
    plan: dict[str, Any] = field(default_factory=dict)
    """The deployment as planned (``Plan.to_dict``, as ``plan.json`` holds it)."""
    run_dir: str = ""
    """The run directory, as the run wrote it ("" in a killed run's summary)."""
    engine: dict[str, Any] = field(default_factory=dict)
    """The loaded engine's facts (``Engine.describe``); empty when no model was loaded."""
    load_time_s: float = 0.0
    """Seconds the engine took to load."""
    total_time_s: float = 0.0
    """Seconds from the run's start to its record written (a killed run: its events' span)."""
    started_at: float | None = None
    """When the run started, seconds since the epoch (None: a killed run, or an older one)."""
    ended_at: float | None = None
    """When it ended, seconds since the epoch: MLflow's end time (replay logs it so)."""
    resources: dict[str, Any] = field(default_factory=dict)
    """What the run was given: host, GPUs, CPUs, memory (in a sweep, its share of the node)."""
    datasets: dict[str, DatasetOutcome] = field(default_factory=dict)
    """Each dataset's outcome, by name, in the order they were evaluated."""
    telemetry: dict[str, Any] = field(default_factory=dict)
    """What telemetry recorded (``Telemetry.record``); empty when nothing was sampled."""
    tracking: dict[str, Any] = field(default_factory=dict)
    """Where the run was tracked (``Tracker.describe``: URI, experiment, run ids)."""
    memory_check: dict[str, Any] = field(default_factory=dict)
    """The plan's memory figures beside what the engine took at start-up
    (``record/memory_check.py``); empty when the engine reports none (HF, an endpoint)."""
    killed: bool = False
    """The run ended before writing its summary (SIGTERM, Ctrl-C, SIGKILL): built from its
    events by ``killed_summary``. Not in summary.json (a killed run writes none)."""

    @property
    def failed(self) -> list[str]:
        """The datasets that failed, in order."""
        return [n for n, d in self.datasets.items() if d.status != "ok"]

    @property
    def resumed(self) -> list[str]:
        """The datasets taken from the result store instead of evaluated."""
        return [n for n, d in self.datasets.items() if d.resumed]

    @property
    def status(self) -> Literal["FINISHED", "FAILED", "KILLED"]:
        """``KILLED``, ``FAILED`` (a dataset failed) or ``FINISHED``: the run's end in MLflow."""
        if self.killed:
            return "KILLED"
        return "FAILED" if self.failed else "FINISHED"

    def to_dict(self) -> dict[str, Any]:
        """summary.json, key for key as every commit wrote it."""
        return {
            "model": self.model,
            "strategy": self.strategy,
            "plan": self.plan,
            "run_dir": self.run_dir,
            "engine": self.engine,
            "load_time_s": self.load_time_s,
            "total_time_s": self.total_time_s,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "resources": self.resources,
            "datasets": {name: d.to_dict() for name, d in self.datasets.items()},
            "failed": self.failed,
            "resumed": self.resumed,
            "telemetry": self.telemetry,
            "tracking": self.tracking,
            "memory_check": self.memory_check,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunSummary:
        """A summary as ``to_dict`` wrote it, by this commit or an earlier one (which lacked
        ``started_at``, ``ended_at`` and ``resources``, and wrote ``telemetry: null`` when
        nothing was sampled). ``failed`` and ``resumed`` follow from the datasets."""
        datasets = data.get("datasets") or {}
        return cls(
            model=str(data.get("model") or ""),
            strategy=str(data.get("strategy") or ""),
            plan=data.get("plan") or {},
            run_dir=str(data.get("run_dir") or ""),
            engine=data.get("engine") or {},
            load_time_s=float(data.get("load_time_s") or 0.0),
            total_time_s=float(data.get("total_time_s") or 0.0),
            started_at=data.get("started_at"),
            ended_at=data.get("ended_at"),
            resources=data.get("resources") or {},
            datasets={n: DatasetOutcome.from_dict(d, n) for n, d in datasets.items()},
            telemetry=data.get("telemetry") or {},
            tracking=data.get("tracking") or {},
            memory_check=data.get("memory_check") or {},
        )


def killed_summary(events: Sequence[dict[str, Any]], plan: dict[str, Any]) -> RunSummary:
    """The summary of a run that ended before writing it (SIGTERM, Ctrl-C, SIGKILL), from its
    ``events.jsonl`` (harness/record/events.py): what finished, from each dataset's last event
    (it carries the whole outcome); the load time and the span the events saw."""
    planned = next((e for e in events if e.get("event") == "planned"), {})
    loaded = next((e for e in events if e.get("event") == "loaded"), {})
    checked: dict[str, Any] = next(
        (e for e in reversed(events) if e.get("event") == "memory_checked"), {}
    )
    datasets: dict[str, DatasetOutcome] = {}
    for e in events:
        last = e.get("event") in ("dataset_done", "dataset_failed", "dataset_resumed")
        if last and isinstance(e.get("outcome"), dict):
            datasets[e["dataset"]] = DatasetOutcome.from_dict(e["outcome"], e["dataset"])
    times = [e["t"] for e in events if isinstance(e.get("t"), int | float)]
    return RunSummary(
        model=str(planned.get("model") or plan.get("model") or ""),
        strategy=str(planned.get("strategy") or plan.get("strategy") or ""),
        plan=plan,
        load_time_s=loaded.get("load_time_s", 0.0),
        total_time_s=round(max(times) - min(times), 4) if times else 0.0,
        datasets=datasets,
        memory_check=checked.get("check") or {},
        killed=True,
    )
