"""Reading a run directory for replay: its config and summary (summary.json, or for a killed
run the summary its events tell), where it logs, and the run's own times."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.config.schema import TrackingBackend, TrackingConfig
from harness.record.outcome import DatasetOutcome
from harness.record.rundir import RunDirectory
from harness.record.summary import RunSummary


class ReplayError(Exception):
    """A run directory that cannot be replayed, and why."""


def read_run_dir(root: Path) -> tuple[dict[str, Any], RunSummary]:
    """The run's config.yaml and its summary: summary.json, or for a run killed before writing
    it, the summary its events.jsonl tells.

    Raises:
        ReplayError: not a finished run directory.
    """
    from harness.record.events import read_events

    if not root.is_dir():
        raise ReplayError(
            f"{root} is not a directory. Fix: give a run directory (outputs/runs/...)"
        )
    run_dir = RunDirectory(root)
    events = read_events(run_dir.events)
    if run_dir.plan.is_file() and not events:  # a run's first event precedes its plan
        raise ReplayError(
            f"{root} holds a plan only (plan_only=true): no model ran, nothing to log. "
            "Fix: run without plan_only=true, then replay its run directory"
        )
    if not run_dir.config.is_file():
        raise ReplayError(
            f"{root} has no {run_dir.CONFIG}: it is not a run directory, or the run stopped "
            "before it began. Fix: give a run directory (outputs/runs/...), or rerun its command"
        )
    config = run_dir.read_config()
    if run_dir.summary.is_file():
        return config, written_summary(run_dir)
    return config, summary_from_events(run_dir, events)


def written_summary(run_dir: RunDirectory) -> RunSummary:
    """The run's summary.json.

    Raises:
        ReplayError: it is not a summary (not JSON: edited, or not written by harness).
    """
    summary = run_dir.read_summary()
    if summary is None:
        raise ReplayError(
            f"{run_dir.summary} cannot be read as a run's summary. Fix: move it aside (replay "
            "then tells the run from its events), or rerun its command"
        )
    return summary


def summary_from_events(run_dir: RunDirectory, events: list[dict[str, Any]]) -> RunSummary:
    """The summary of a run that ended before writing one, from its events.

    Raises:
        ReplayError: the run is still going, or its events do not tell what ran.
    """
    from harness.record.events import still_running
    from harness.record.summary import killed_summary

    pid = still_running(events)
    if pid is not None:
        raise ReplayError(
            f"{run_dir.root} is still being written by process {pid} on this host: the run has "
            "not ended. Fix: replay it once that process has ended"
        )
    plan = run_dir.read_plan()
    if not events or not (plan or any(e.get("event") == "planned" for e in events)):
        raise ReplayError(
            f"{run_dir.root} has no {run_dir.SUMMARY} and no {run_dir.EVENTS} to tell what ran. "
            "Fix: rerun its command (datasets already stored are not evaluated again), then replay"
        )
    return killed_summary(events, plan)


def tracking_target(config: dict[str, Any], summary: RunSummary, uri: str | None) -> TrackingConfig:
    """Where to log: ``uri`` when given, else the run's own tracking config (its URI as the run
    resolved it, from summary.json).

    Raises:
        ReplayError: the run was not tracked and no URI is given, or its URI held credentials
            (masked in the run directory).
    """
    own = config.get("tracking") or {}
    experiment = str(own.get("experiment") or "harness")
    if uri is not None:
        location = None
        if uri.startswith("sqlite:///"):  # artifacts beside the store, as tracking=local has them
            location = str(Path(uri.removeprefix("sqlite:///")).resolve().parent / "mlartifacts")
        return TrackingConfig(
            backend=TrackingBackend.mlflow,
            uri=uri,
            experiment=experiment,
            artifact_location=location,
        )
    if own.get("backend") != "mlflow":
        raise ReplayError(
            "its config has tracking.backend=none. Fix: --tracking-uri URI (sqlite:///path.db or "
            "http://host:port)"
        )
    described = summary.tracking
    target = str(described.get("uri") or own.get("uri") or "")
    if "***" in target:
        raise ReplayError(
            f"its tracking URI held credentials, masked in the run directory ({target}). Fix: "
            "--tracking-uri URI, with the credentials in MLFLOW_TRACKING_USERNAME/PASSWORD"
        )
    location = described.get("artifact_location") or own.get("artifact_location")
    return TrackingConfig(
        backend=TrackingBackend.mlflow,
        uri=target,
        experiment=experiment,
        artifact_location=location,
    )


def run_times(run_dir: RunDirectory) -> tuple[float | None, float | None]:
    """When the run started and ended, from events.jsonl (None where unknown)."""
    from harness.record.events import read_events

    events = read_events(run_dir.events)
    start = next((e["t"] for e in events if e.get("event") == "planned"), None)
    end = next((e["t"] for e in events if e.get("event") == "run_done"), None)
    if end is None and events:  # killed outright: the last thing it did
        end = max(e["t"] for e in events)
    return start, end


def moved_outcome(run_dir: RunDirectory, outcome: DatasetOutcome) -> DatasetOutcome:
    """The outcome with its files where they are now (the run directory may have moved)."""
    for attr, here in (
        ("result_file", run_dir.dataset_result(outcome.name)),
        ("samples_file", run_dir.dataset_samples(outcome.name)),
    ):
        if getattr(outcome, attr) and here.is_file():
            setattr(outcome, attr, str(here))
    return outcome


def run_span(run_dir: RunDirectory, summary: RunSummary) -> tuple[float | None, float | None]:
    """The run's own span, as the live run logged it (from its events when the summary has
    none: a killed run, or one written before summaries kept it)."""
    if summary.ended_at:
        return summary.ended_at - summary.total_time_s, summary.ended_at
    return run_times(run_dir)
