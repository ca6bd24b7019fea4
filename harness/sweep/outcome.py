"""What became of each job of a sweep: one table, printed and written to the sweep directory."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from harness.record.rundir import RunDirectory
from harness.sweep.packing import Grant


@dataclass
class JobOutcome:
    index: int
    model: str
    strategy: str
    tier: str
    state: str
    datasets_ok: int | None
    datasets_failed: int | None
    run_dir: str
    job_id: str
    detail: str = ""
    log: str = ""
    given: dict[str, Any] | None = None
    """The share of the node a local job was given (``Grant.to_dict``: GPUs, CPUs, memory);
    None on SLURM, which keeps its own account."""
    started_at: float | None = None
    """When a local job started and ended, seconds since the epoch (SLURM's are in sacct)."""
    ended_at: float | None = None
    datasets_reused: int | None = None
    """Datasets the job took from the result store instead of evaluating (None: no summary)."""
    tracking: str = ""
    """What became of the job's MLflow tracking: ``logged``, ``off`` (tracking=none), ``failed:
    <reason>`` (the results are on disk; replay logs them), or empty (no run record to read)."""


def dataset_counts(run_dir: Path) -> tuple[int | None, int | None]:
    """Datasets that succeeded and failed in a run directory: from its summary.json when the run
    finished, else from the result files it wrote before it ended."""
    record = RunDirectory(run_dir)
    summary = record.read_summary()
    if summary is not None:
        failed = len(summary.failed)
        return len(summary.datasets) - failed, failed
    if not record.results_dir.is_dir():
        return None, None
    done, failed_names = record.written_results()
    return len(done), len(failed_names)


def reused_datasets(run_dir: Path) -> int | None:
    """Datasets a finished run took from the result store (None when it left no summary)."""
    summary = RunDirectory(run_dir).read_summary()
    if summary is None:
        return None
    return sum(1 for d in summary.datasets.values() if d.resumed)


def tracking_outcome(run_dir: Path) -> str:
    """The job's tracking as its run recorded it: the ``run_done`` event's ``tracking_failure``
    (set once MLflow's writer has finished, so a failure at the run's very end counts), else
    summary.json's ``tracking``; empty when the run left neither."""
    from harness.record.events import read_events

    record = RunDirectory(run_dir)
    done = [e for e in read_events(record.events) if e.get("event") == "run_done"]
    if done and done[-1].get("tracking_failure"):
        return f"failed: {done[-1]['tracking_failure']}"
    summary = record.read_summary()
    if summary is None:
        return ""
    tracking = summary.tracking or {}
    if tracking.get("failed"):
        return f"failed: {tracking.get('failure') or 'an MLflow call failed'}"
    return "logged" if tracking.get("enabled") else "off"


def tracking_lost(outcomes: Sequence[JobOutcome]) -> list[JobOutcome]:
    """The jobs whose run was evaluated but not (wholly) tracked in MLflow."""
    return [o for o in outcomes if o.tracking.startswith("failed")]


def failed_datasets(run_dir: Path) -> list[str]:
    """``<dataset> (<error type>: <message>)`` for each failed dataset of a finished run."""
    summary = RunDirectory(run_dir).read_summary()
    if summary is None:
        return []
    out = []
    for name in summary.failed:
        d = summary.datasets[name]
        out.append(f"{name} ({d.error_type}: {d.error_message})")
    return out


def format_outcomes(outcomes: Sequence[JobOutcome], sweep_dir: Path) -> str:
    """The outcome table; for local jobs also each one's share of the node and when it ran
    (seconds from the first start), which shows how the jobs were packed."""
    head = ["job", "model", "strategy", "tier", "state", "datasets ok/failed", "tracking"]
    head += ["run dir", "job id"]
    packed = any(o.given for o in outcomes)
    if packed:
        head += ["given", "ran (s)"]
    first = min((o.started_at for o in outcomes if o.started_at is not None), default=0.0)
    rows = []
    for o in outcomes:
        counts = "-" if o.datasets_ok is None else f"{o.datasets_ok}/{o.datasets_failed}"
        if o.datasets_reused:  # not evaluated by this job: stored by an earlier one
            counts += f" ({o.datasets_reused} reused)"
        try:  # the run dir may be relative to the working directory (outputs_root's default)
            where = str(Path(o.run_dir).resolve().relative_to(sweep_dir.resolve()))
        except ValueError:
            where = o.run_dir
        tracking = o.tracking.split(":", 1)[0] or "-"
        row = [str(o.index), o.model, o.strategy, o.tier, o.state, counts, tracking]
        row += [where, o.job_id]
        if packed:
            ran = "-"
            if o.started_at is not None:
                end = "" if o.ended_at is None else f"{o.ended_at - first:.1f}"
                ran = f"{o.started_at - first:.1f}-{end}"
            row += [Grant.of(o.given).describe() if o.given else "-", ran]
        rows.append(row)
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    lines = [f"sweep outcome ({sweep_dir}):"]
    lines += [
        "  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in [head, *rows]
    ]
    bad = [o for o in outcomes if o.state != "COMPLETED"]
    for o in bad:
        lines.append(
            f"  job {o.index} {o.state}: {o.detail}" + (f" (log: {o.log})" if o.log else "")
        )
    lost = tracking_lost(outcomes)
    for o in lost:
        done = "completed" if o.state == "COMPLETED" else o.state
        lines.append(f"  job {o.index} {done}, tracking lost: {o.tracking[len('failed: ') :]}")
    if bad:
        lines.append(
            f"{len(bad)} of {len(outcomes)} job(s) did not complete: "
            + ", ".join(f"{o.index} ({o.state})" for o in bad)
            + ". Rerun the same command to retry: datasets already stored are not evaluated again."
        )
    elif not lost:
        lines.append(f"all {len(outcomes)} job(s) completed")
    if lost:
        completed = len(outcomes) - len(bad)
        dirs = " ".join(o.run_dir for o in lost)
        lines.append(
            f"{completed} of {len(outcomes)} job(s) completed; MLflow tracking failed in "
            f"{len(lost)} (their runs are on disk; `python -m harness.replay {dirs}` logs them)"
        )
    return "\n".join(lines)


def write_outcomes(outcomes: Sequence[JobOutcome], sweep_dir: Path) -> Path:
    from harness.record.files import write_json_atomic, write_text_atomic

    text = format_outcomes(outcomes, sweep_dir)
    path = sweep_dir / "sweep_outcome.txt"
    write_text_atomic(path, text + "\n")
    write_json_atomic(sweep_dir / "sweep_outcome.json", [asdict(o) for o in outcomes])
    return path


def last_error_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if not line.startswith(("File ", "-", "^", "You can check"))]
    for line in reversed(errors):
        if ":" in line and not line.startswith("or at paths"):
            return line[:300]
    return (errors[-1] if errors else text)[:300]
