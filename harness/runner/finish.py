"""A run's end: telemetry, reproducibility.json and summary.json written and logged
(``finish_run``, as replay logs them), the events closed, then the console's report
(``report_run``) and the exit code."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from harness import console
from harness.config.schema import RunConfig
from harness.console import say
from harness.planning.plan import Plan
from harness.runner.opening import OpenRun

if TYPE_CHECKING:
    from harness.record.outcome import DatasetOutcome
    from harness.record.rundir import RunDirectory
    from harness.record.summary import RunSummary
    from harness.tracking import Tracker


def finish_run(
    opened: OpenRun,
    run_cfg: RunConfig,
    plan: Plan,
    outcomes: list[DatasetOutcome],
    timings: tuple[float, float],
    engine_facts: dict[str, Any],
) -> tuple[RunSummary, list[str]]:
    """Write telemetry, reproducibility.json and summary.json, then log them (as replay does).

    ``timings`` are the load time and the run's start (``time.perf_counter()``); the total is
    taken once everything is written, and MLflow's end time is that same instant. Returns the
    summary and what a full disk kept from being written (said at the end).
    """
    from harness.record.files import DiskFull
    from harness.record.provenance import record_run
    from harness.tracking.rundir import log_run_end, log_telemetry

    run_dir, tracker = opened.run_dir, opened.tracker
    unwritten: list[str] = []

    def keep(write: Any, *args: Any) -> Any:
        try:
            return write(*args)
        except DiskFull as err:
            unwritten.append(str(err))
            return None

    telemetry = keep(opened.telemetry.record, run_dir.root, outcomes) or {}
    fingerprints = {name: item.fingerprint for name, item in opened.work.items()}
    keep(record_run, run_dir, run_cfg, plan, engine_facts, fingerprints)
    summary = run_summary(opened, plan, outcomes, timings, engine_facts, telemetry)
    keep(run_dir.write_summary, summary)
    log_telemetry(tracker, run_dir)  # from the files just written, as replay does
    # totals, files, record: what replay logs too; the end is the run's, not the worker's
    log_run_end(tracker, run_dir, summary, end_time=summary.ended_at)
    close_record(opened, summary)
    return summary, unwritten


def run_summary(
    opened: OpenRun,
    plan: Plan,
    outcomes: list[DatasetOutcome],
    timings: tuple[float, float],
    engine_facts: dict[str, Any],
    telemetry: dict[str, Any],
) -> RunSummary:
    """The finished run's summary; its total and end are taken now (``timings``: the load time
    and the run's start, ``time.perf_counter()``)."""
    from harness.machine.node import given_resources
    from harness.record.memory_check import memory_check
    from harness.record.summary import RunSummary

    load_time, started = timings
    total_time, ended_at = time.perf_counter() - started, time.time()
    return RunSummary(
        model=plan.model,
        strategy=plan.strategy,
        plan=plan.to_dict(),
        run_dir=str(opened.run_dir.root),
        engine=engine_facts,
        load_time_s=round(load_time, 4),
        total_time_s=round(total_time, 4),
        started_at=round(ended_at - total_time, 3),  # seconds since the epoch
        ended_at=round(ended_at, 3),  # seconds since the epoch: MLflow's end time (replay)
        resources=given_resources(),  # what this run was given: in a sweep, its share
        datasets={o.name: o for o in outcomes},
        telemetry=telemetry,
        tracking=opened.tracker.describe(),
        memory_check=memory_check(plan.to_dict(), engine_facts),
    )


def close_record(opened: OpenRun, summary: RunSummary) -> None:
    """Let MLflow's worker catch up, then write ``run_done`` and close the events.

    The idle-priority worker may still be writing: its catching up comes after the run's own
    end (MLflow's end time and total_time_s leave it out), so it is measured and said.
    """
    draining = time.perf_counter()
    opened.tracker.close()
    drain = round(time.perf_counter() - draining, 3)
    opened.events.emit(
        "run_done",
        status=summary.status,
        failed=summary.failed,
        tracking_drain_s=drain,
        tracking_failure=opened.tracker.failure,  # a sweep's outcome reads it
    )
    if drain >= 1.0:
        say(f"MLflow caught up {drain:.1f}s after the run ended (not in total_time_s)")
    opened.events.close()


def report_run(
    summary: RunSummary,
    unwritten: list[str],
    tracker: Tracker,
    run_dir: RunDirectory,
    verbose: bool = False,
) -> int:
    """Say where the run is in MLflow, print the summary table (a group's subgroups and
    subtasks in the log file, and on the console with ``verbose``); the exit code."""
    from harness.views import format_summary

    if tracker.failed:
        say(
            f"warning: MLflow does not hold this run whole (the warning above says why); every "
            f"result is in {run_dir.root}. Log it later: python -m harness.replay {run_dir.root}",
            err=True,
            level=logging.WARNING,
        )
    elif tracker.enabled:
        remote = tracker.uri.startswith(("http://", "https://"))
        if remote:
            say(f"runs table: {tracker.ui_url()}")
            say(f"this run: {tracker.run_url()}")
        else:  # a local store's link opens once `mlflow ui` serves it
            serve = f"mlflow ui --backend-store-uri {tracker.uri}"
            say(f"this run in MLflow: {tracker.run_url()} (after: {serve})")
    console.summarise_collapsed()  # the warnings a quiet console counted, one line each
    whole = format_summary(summary.to_dict(), breakdown=True)
    say(whole if verbose else format_summary(summary.to_dict()), record=whole)
    failed = [(name, summary.datasets[name]) for name in summary.failed]
    if failed:
        say(
            f"{len(failed)} of {len(summary.datasets)} datasets failed: "
            + ", ".join(f"{n} ({d.error_type}: {d.error_message})" for n, d in failed)
            + f". Details: {run_dir.dataset_error('<dataset>')}; rerun the same command "
            "to retry only those.",
            err=True,
            level=logging.ERROR,
        )
    for problem in unwritten:
        say(f"error: {problem}", err=True, level=logging.ERROR)
    return 1 if failed or unwritten else 0
