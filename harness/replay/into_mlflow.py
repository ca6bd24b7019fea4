"""Replay's side of MLflow: what is logged already for a run directory, the partial live log
to complete, and the run directory logged through the live run's own functions."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from harness.config.schema import TrackingConfig
from harness.record.rundir import RunDirectory
from harness.record.summary import RunSummary
from harness.replay.reading import (
    ReplayError,
    moved_outcome,
    read_run_dir,
    run_span,
    tracking_target,
)
from harness.secrets import mask


@dataclass
class Replayed:
    """What replay did with one run directory."""

    run_dir: Path
    """The run directory."""
    status: Literal["replayed", "skipped", "failed"]
    """``replayed`` (logged now), ``skipped`` (already logged whole) or ``failed``."""
    message: str
    """What was done, or why not."""


def logged_runs(uri: str, experiment: str, uid: str) -> list[Any]:
    """The active runs (parents and children) already logged for this run directory."""
    from mlflow.tracking import MlflowClient

    from harness.tracking import RUN_UID_TAG
    from harness.tracking.names import store_lock

    with store_lock(uri):  # the store may be fresh, and a live run creating it
        client = MlflowClient(tracking_uri=uri)
        found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    query = f"tags.`{RUN_UID_TAG}` = '{uid}'"
    return list(client.search_runs([found.experiment_id], query, max_results=5000))


def log_run_dir(
    run_dir: RunDirectory,
    target: TrackingConfig,
    config: dict[str, Any],
    summary: RunSummary,
    adopt: dict[str, str] | None = None,
) -> Any:
    """Log one run directory whole, completing the runs of ``adopt`` already in MLflow (by
    handle: ``""`` the parent, else a dataset); returns its Tracker (``failed`` tells whether
    all went in)."""
    from harness.record.events import dataset_times, read_events
    from harness.tracking import Tracker, parent_run_name, parent_tags, run_uid
    from harness.tracking.rundir import log_run_end, log_telemetry, parent_params

    start, end = run_span(run_dir, summary)
    uid = run_uid(run_dir.root)
    tracker = Tracker(target, uid=uid, adopt=adopt)
    model, strategy = summary.model, summary.strategy
    tracker.start(
        run_name=parent_run_name(model, strategy, list(summary.datasets), uid),
        params=parent_params(config, summary.plan),
        tags=parent_tags(model, strategy, run_dir.root),
        start_time=start,
    )
    if summary.engine:  # the live run logs it once a model was loaded
        tracker.log_metrics({"load_time_s": summary.load_time_s})
    spans = dataset_times(read_events(run_dir.events))
    _log_datasets(tracker, run_dir, config, summary, spans)
    log_telemetry(tracker, run_dir)
    log_run_end(tracker, run_dir, summary, end_time=end)
    tracker.close()
    return tracker


def _log_datasets(
    tracker: Any,
    run_dir: RunDirectory,
    config: dict[str, Any],
    summary: RunSummary,
    spans: dict[str, tuple[float, float]],
) -> None:
    """Each dataset's child run, as the live run logged it."""
    from harness.tracking.rundir import open_child, track_outcome

    prints = run_dir.read_reproducibility().get("datasets") or {}
    for name, outcome in summary.datasets.items():
        outcome = moved_outcome(run_dir, outcome)
        settings = (config.get("dataset") or {}).get(name) or {}
        settings = {k: settings.get(k, "") for k in ("task", "num_fewshot", "limit")}
        settings |= outcome.evaluation  # lm-eval's settings it changed, as the live run logs
        fingerprint = outcome.fingerprint or (prints.get(name) or {}).get("fingerprint", "")
        began, ended = spans.get(name, (None, None))
        child = open_child(tracker, name, settings, fingerprint, outcome.resumed, began)
        track_outcome(tracker, child, outcome, end_time=ended)


def live_log(runs: list[Any], parents: list[Any]) -> tuple[dict[str, str], str]:
    """The partial live log to complete: its latest parent (a resumed run opened one per
    attempt) and that parent's children, by handle; and what replay says of it."""
    if not parents:
        return {}, ""
    parent = max(parents, key=lambda r: r.info.start_time or 0)
    adopt = {"": str(parent.info.run_id)}
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    for child in sorted(children, key=lambda r: r.info.start_time or 0):  # the latest wins
        adopt[str(child.info.run_name)] = str(child.info.run_id)
    return adopt, (
        f"; completed its partial log (parent {parent.info.run_id} and its "
        f"{len(children)} child runs kept)"
    )


def replay_run(root: Path, tracking_uri: str | None = None) -> Replayed:
    """Replay one run directory (see the module's docstring); never raises for a bad one."""
    from harness.tracking import LOGGED_TAG, local_uri, mlflow_defaults, run_uid

    mlflow_defaults()
    root = root.resolve()
    try:
        config, summary = read_run_dir(root)
        target = tracking_target(config, summary, tracking_uri)
        uri = local_uri(target.uri)
        uid = run_uid(root)
        runs = logged_runs(uri, target.experiment, uid)
    except ReplayError as err:
        return Replayed(root, "failed", str(err))
    except Exception as err:  # MLflow unreachable, a file unreadable: say which, go on
        why = f"{type(err).__name__}: {mask(str(err).splitlines()[0])}"
        fix = "Fix: start the tracking server (or check its address), or give --tracking-uri"
        return Replayed(root, "failed", f"{why}. {fix}")
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    whole = [r for r in parents if r.data.tags.get(LOGGED_TAG) == "complete"]
    if whole:
        return Replayed(
            root,
            "skipped",
            f"already in MLflow whole (run {whole[0].info.run_id}), not logged again",
        )
    adopt, note = live_log(runs, parents)
    tracker = log_run_dir(RunDirectory(root), target, config, summary, adopt)
    if tracker.failed:
        why = f"MLflow failed during the replay at {mask(uri)} (the warning above says how)"
        return Replayed(root, "failed", f"{why}. Fix: replay again once it answers")
    return Replayed(
        root,
        "replayed",
        f"logged as run {tracker.parent_id} ({len(summary.datasets)} datasets) in "
        f"experiment {target.experiment} at {mask(uri)}{note}",
    )
