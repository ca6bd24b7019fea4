"""Put saved runs into MLflow later: ``python -m harness.replay RUN_DIR... [--tracking-uri URI]``.

A run whose tracking server was down (at start or mid-run) still has everything in its run
directory; replay logs it as the live run would have, through the same functions (parent params
from config.yaml, a child run per dataset with its metrics, result and samples, the telemetry,
the totals, config.yaml, summary.json and the reproducibility record), into the tracking target
of the run's own config or the one given.

Idempotent: every run harness logs carries the run directory's ``harness.run_uid``, and a parent
logged whole carries ``harness.logged=complete`` (its last record). A run directory already
logged whole is skipped. A partial one (the server died mid-run, the run was killed) is
completed, not rewritten: its live parent and children keep their ids, and what they lack is
added to them (a metric key or param they hold already is not logged again, so no series
repeats a point), their end state set; a dataset's child the live run never opened is created.
A child of a dataset cut short (the in-flight one of a killed run) is kept as it was.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from harness.config.schema import TrackingBackend, TrackingConfig
from harness.record.outcome import DatasetOutcome
from harness.record.rundir import RunDirectory
from harness.record.summary import RunSummary
from harness.secrets import mask

log = logging.getLogger(__name__)


class ReplayError(Exception):
    """A run directory that cannot be replayed, and why."""


@dataclass
class Replayed:
    """What replay did with one run directory."""

    run_dir: Path
    """The run directory."""
    status: Literal["replayed", "skipped", "failed"]
    """``replayed`` (logged now), ``skipped`` (already logged whole) or ``failed``."""
    message: str
    """What was done, or why not."""


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


def _times(run_dir: RunDirectory) -> tuple[float | None, float | None]:
    """When the run started and ended, from events.jsonl (None where unknown)."""
    from harness.record.events import read_events

    events = read_events(run_dir.events)
    start = next((e["t"] for e in events if e.get("event") == "planned"), None)
    end = next((e["t"] for e in events if e.get("event") == "run_done"), None)
    if end is None and events:  # killed outright: the last thing it did
        end = max(e["t"] for e in events)
    return start, end


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


def _moved(run_dir: RunDirectory, outcome: DatasetOutcome) -> DatasetOutcome:
    """The outcome with its files where they are now (the run directory may have moved)."""
    for attr, here in (
        ("result_file", run_dir.dataset_result(outcome.name)),
        ("samples_file", run_dir.dataset_samples(outcome.name)),
    ):
        if getattr(outcome, attr) and here.is_file():
            setattr(outcome, attr, str(here))
    return outcome


def _span(run_dir: RunDirectory, summary: RunSummary) -> tuple[float | None, float | None]:
    """The run's own span, as the live run logged it (from its events when the summary has
    none: a killed run, or one written before summaries kept it)."""
    if summary.ended_at:
        return summary.ended_at - summary.total_time_s, summary.ended_at
    return _times(run_dir)


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
    from harness.tracking import Tracker, parent_tags, run_uid
    from harness.tracking.rundir import log_run_end, log_telemetry, parent_params

    start, end = _span(run_dir, summary)
    tracker = Tracker(target, uid=run_uid(run_dir.root), adopt=adopt)
    model, strategy = summary.model, summary.strategy
    tracker.start(
        run_name=f"{model}/{strategy}",
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
        outcome = _moved(run_dir, outcome)
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


def main(argv: list[str] | None = None) -> int:
    """Replay each run directory; exit code 1 when any could not be replayed."""
    parser = argparse.ArgumentParser(
        prog="python -m harness.replay",
        description="Log saved run directories into MLflow (idempotent: a run already logged "
        "whole is skipped, a partial one completed in place).",
    )
    parser.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR")
    parser.add_argument(
        "--tracking-uri",
        default=None,
        help="log here instead of each run's own tracking target (sqlite:///path.db, "
        "http://host:port)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    from harness.console import route_library_logs

    route_library_logs("mlflow")  # MLflow's INFO lines (store migrations) stay off the console
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    outcomes = [replay_run(path, args.tracking_uri) for path in args.run_dirs]
    for outcome in outcomes:
        print(f"{outcome.status} {outcome.run_dir}: {outcome.message}", flush=True)
    failed = [o for o in outcomes if o.status == "failed"]
    counts = {s: sum(o.status == s for o in outcomes) for s in ("replayed", "skipped", "failed")}
    print(", ".join(f"{n} {s}" for s, n in counts.items()))
    if failed:
        print(
            "not replayed: " + ", ".join(str(o.run_dir) for o in failed),
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
