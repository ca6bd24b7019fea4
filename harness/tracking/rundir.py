"""Log a run directory into MLflow: the one module the live run and replay both call.

The record is files (``harness.record``); tracking reads them and logs: each dataset's child run
(``open_child``, ``track_outcome``), the telemetry (``log_telemetry``), the reproducibility record
(``log_record``) and the run's end (``log_run_end``). What the live run logs and what
``python -m harness.replay`` logs later are therefore the same calls on the same files.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from harness.record.memory_check import memory_metrics
from harness.record.metrics import headline
from harness.record.outcome import DatasetOutcome
from harness.record.provenance import tags as record_tags
from harness.record.rundir import RunDirectory
from harness.record.summary import RunSummary
from harness.telemetry.export import csv_points
from harness.tracking.groups import member_metrics, tree_tags
from harness.tracking.names import LOGGED_TAG, flatten
from harness.tracking.tracker import Tracker

log = logging.getLogger(__name__)

PLAN_PROSE = ("problems", "notes", "explanation")
"""Plan entries that are sentences, not facts of the deployment: in plan.json, not in params."""


def parent_params(config: dict[str, Any], plan: dict[str, Any]) -> dict[str, str]:
    """The parent run's params: the composed config as typed (``model.*``, ``strategy.*``, ...)
    and the deployment as planned (``plan.*``: engine, device, tp/pp/dp, dtype, backends, memory,
    ``plan.model_facts.*`` as used). Comparing runs by params then compares what really ran,
    also where ``strategy=auto`` chose or a checkpoint's facts replaced the registry's."""
    facts = {k: v for k, v in plan.items() if k not in PLAN_PROSE}
    return dict(flatten(config)) | dict(flatten(facts, "plan."))


def open_child(
    tracker: Tracker,
    name: str,
    settings: dict[str, Any],
    fingerprint: str,
    resumed: bool,
    start_time: float | None = None,
) -> str | None:
    """Open a dataset's child run with its params (its task, num_fewshot and limit in
    ``settings``, and lm-eval's evaluation settings it changes, such as ``apply_chat_template``
    or ``gen_kwargs.max_gen_toks``) at ``start_time`` (now by default); the live run and replay
    both open children here."""
    task = str(settings["task"])
    shown = ("task", "num_fewshot", "limit")
    others = dict(flatten({k: v for k, v in settings.items() if k not in shown}))
    return tracker.child(
        name,
        params={
            "task": task,
            "num_fewshot": str(settings["num_fewshot"]),
            "limit": str(settings["limit"]),
            "fingerprint": fingerprint,
            **others,
        },
        tags={"dataset": name, "task": task, "resumed": str(resumed)},
        start_time=start_time,
    )


def track_outcome(
    tracker: Tracker, child: str | None, outcome: DatasetOutcome, end_time: float | None = None
) -> None:
    """Log a dataset's outcome: metrics, tags, result, samples and their table (MLflow's UI
    compares it across runs, tracking/samples_table.py) on its child run (ended at
    ``end_time``, now by default; a group's subgroups and subtasks too, tracking/groups.py), the
    dataset's own prefixed ``<dataset>/...`` on the parent (the live run and replay both log
    here)."""
    tags = {"status": outcome.status, "resumed": str(outcome.resumed)}
    if outcome.error_type:
        tags["error_type"] = outcome.error_type
        tags["error_message"] = (outcome.error_message or "")[:5000]
    timing = outcome.timing_metrics()
    if child is not None:
        tracker.log_metrics({**outcome.metrics, **member_metrics(outcome), **timing}, run=child)
        tracker.set_tags({**tags, **tree_tags(outcome)}, run=child)
        if outcome.result_file:
            tracker.log_artifact(Path(outcome.result_file), run=child)
        if outcome.samples_file:
            tracker.log_artifact(Path(outcome.samples_file), run=child, artifact_path="samples")
            tracker.log_samples_table(Path(outcome.samples_file), outcome.name, run=child)
        status = "FINISHED" if outcome.status == "ok" else "FAILED"
        tracker.end(run=child, status=status, end_time=end_time)
    prefixed = {f"{outcome.name}/{k}": v for k, v in {**outcome.metrics, **timing}.items()}
    tracker.log_metrics(prefixed)
    tracker.set_tags({f"{outcome.name}/{k}": v for k, v in tags.items()})


def log_telemetry(tracker: Tracker, run_dir: RunDirectory) -> None:
    """Log the telemetry of ``run_dir`` from its files (the live run, after writing them, and
    replay both log here): per-phase figures on the child runs (``load`` on the parent, as
    ``load/...``) and each dataset's headline as ``<dataset>/...`` on the parent, the series
    read from telemetry.csv, the tags and the files."""
    if not (run_dir.telemetry_json.is_file() and run_dir.telemetry_csv.is_file()):
        return  # nothing was sampled (no GPU, telemetry off)
    try:
        described = json.loads(run_dir.telemetry_json.read_text(encoding="utf-8"))
        points = csv_points(run_dir.telemetry_csv.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:  # telemetry never ends a run, nor its logging
        log.warning("telemetry of %s not logged (%s: %s)", run_dir.root, type(err).__name__, err)
        return
    headline = ("telemetry/energy_j", "telemetry/peak_memory_gib", "tokens_per_joule")
    for name, metrics in described["mlflow"]["metrics"].items():
        if name == "load":
            tracker.log_metrics({f"load/{k}": v for k, v in metrics.items()})
            continue
        if name in tracker.opened:
            tracker.log_metrics(metrics, run=name)
        tracker.log_metrics({f"{name}/{k}": metrics[k] for k in headline if k in metrics})
    tracker.log_series(points)
    tracker.set_tags(described["mlflow"]["tags"])
    for file in run_dir.telemetry_files():
        if file.is_file():
            tracker.log_artifact(file, artifact_path="telemetry")


def log_record(tracker: Tracker, path: Path) -> None:
    """Log reproducibility.json on the parent run: its headline as tags, the file as an artifact
    (the live run and replay both log it here)."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        log.warning("reproducibility record %s not logged (%s)", path, err)
        return
    tracker.set_tags(record_tags(record))
    tracker.log_artifact(path)


def log_run_end(
    tracker: Tracker, run_dir: RunDirectory, summary: RunSummary, end_time: float | None = None
) -> None:
    """What ends a run in MLflow, from its run directory: the run's totals, config.yaml,
    summary.json and the reproducibility record on the parent, the experiment's runs-table view,
    and last the ``harness.logged=complete`` mark (the live run and replay both end here)."""
    tracker.log_metrics(
        {"total_time_s": summary.total_time_s, "datasets_failed": float(len(summary.failed))}
    )
    if memory := memory_metrics(summary.memory_check):  # the plan beside what the engine took
        tracker.log_metrics(memory)
    for path in (run_dir.config, run_dir.plan, run_dir.summary):
        if path.is_file():
            tracker.log_artifact(path)
    if run_dir.reproducibility.is_file():
        log_record(tracker, run_dir.reproducibility)
    headlines = [f"{n}/{h}" for n, d in summary.datasets.items() if (h := headline(set(d.metrics)))]
    tracker.set_view(headlines)
    status = summary.status  # KILLED: what finished before the run was killed
    tag = {"KILLED": "killed", "FAILED": "failed", "FINISHED": "ok"}[status]
    tracker.set_tags({"status": tag, LOGGED_TAG: "complete"})
    tracker.end(status=status, end_time=end_time)
