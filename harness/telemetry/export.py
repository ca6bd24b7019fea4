"""A run's telemetry as files (telemetry.json, telemetry.csv) and as MLflow metrics.

Everything is written to the run directory first, so nothing depends on MLflow; MLflow then gets
the same figures: per-phase summaries, the raw series as step-indexed metrics, and the files.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from harness.record.files import write_json_atomic, write_text_atomic
from harness.record.rundir import RunDirectory
from harness.telemetry.sampler import Phase, Recording
from harness.telemetry.summary import PhaseSummary

CSV_COLUMNS = (
    "node",
    "gpu",
    "time",
    "elapsed_s",
    "phase",
    "memory_used_mib",
    "utilization_pct",
    "power_w",
    "temperature_c",
    "energy_j",
)
SERIES = ("memory_used_mib", "utilization_pct", "power_w", "temperature_c")
"""The readings logged to MLflow as step-indexed series (``gpu0/memory_used_mib``, ...)."""


def phase_at(phases: list[Phase], t: float) -> str:
    """The phase a reading at ``t`` belongs to ("" between phases); a boundary reading belongs
    to the phase it begins."""
    name = ""
    for phase in phases:
        if phase.start <= t and (phase.end is None or t <= phase.end):
            name = phase.name
    return name


def to_csv(recordings: list[Recording], phases: list[Phase]) -> str:
    """Every reading, one row per GPU per reading, with the phase it belongs to."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    t0 = min((rec.started for rec in recordings), default=0.0)
    for rec in recordings:
        for s in rec.samples:
            writer.writerow(
                [
                    rec.node,
                    s.gpu,
                    f"{s.t:.3f}",
                    f"{s.t - t0:.3f}",
                    phase_at(phases, s.t),
                    f"{s.memory_used_mib:.1f}",
                    *("" if v is None else f"{v:g}" for v in (s.utilization_pct, s.power_w)),
                    *("" if v is None else f"{v:g}" for v in (s.temperature_c, s.energy_j)),
                ]
            )
    return out.getvalue()


def describe(
    recordings: list[Recording],
    phases: list[PhaseSummary],
    tokens_per_joule: dict[str, float],
    attributed: list[PhaseSummary] | None = None,
) -> dict[str, Any]:
    """telemetry.json: the nodes, their GPUs and topology, each phase's figures, and each
    dataset's (``attributed``: its share of the phases it shared; MLflow logs these)."""
    attributed = phases if attributed is None else attributed
    return {
        "nodes": [
            {
                "node": rec.node,
                "interval_s": rec.interval_s,
                "started": rec.started,
                "ended": rec.ended,
                "readings": len(rec.samples),
                "gpus": [vars(g) for g in rec.gpus],
                "topology": [vars(x) for x in rec.topology],
                "no_energy_counter": rec.no_energy_counter,
                "stopped_early": rec.error,
                "sampler_thread_cpu_s": round(rec.thread_cpu_s, 4),
                "phase_marks_s": round(rec.mark_s, 4),
            }
            for rec in recordings
        ],
        "phases": [p.to_dict() for p in phases],
        "datasets": [p.to_dict() for p in attributed if p.name != "load"],
        "tokens_per_joule": tokens_per_joule,
        "mlflow": {
            "metrics": phase_metrics(attributed, tokens_per_joule),
            "tags": tags(recordings),
        },
    }


def phase_metrics(
    phases: list[PhaseSummary], tokens_per_joule: dict[str, float]
) -> dict[str, dict[str, float]]:
    """Each phase's figures as the MLflow metrics its run gets."""
    out = {}
    for phase in phases:
        metrics = phase.metrics()
        if phase.name in tokens_per_joule:
            metrics["tokens_per_joule"] = tokens_per_joule[phase.name]
        out[phase.name] = metrics
    return out


def tags(recordings: list[Recording]) -> dict[str, str]:
    """The parent run's telemetry tags: nodes, GPUs, topology."""
    several = len(recordings) > 1
    return {
        "telemetry.nodes": str(len(recordings)),
        "telemetry.gpus": str(sum(len(rec.gpus) for rec in recordings)),
        "telemetry.topology": " ".join(
            f"{rec.node + ':' if several else ''}{x.a}-{x.b}:{x.path}"
            for rec in recordings
            for x in rec.topology
        ),
    }


def write_files(
    root: Path, recordings: list[Recording], phases: list[Phase], described: dict[str, Any]
) -> list[Path]:
    """telemetry.json and telemetry.csv in the run directory."""
    run_dir = RunDirectory(root)
    json_path, csv_path = run_dir.telemetry_json, run_dir.telemetry_csv
    write_json_atomic(json_path, described)
    write_text_atomic(csv_path, to_csv(recordings, phases))
    return [json_path, csv_path]


def csv_points(text: str) -> list[tuple[str, float, int, int]]:
    """The readings of telemetry.csv as MLflow metric points: (key, value, timestamp in ms, step),
    step counting each GPU's readings; keys ``gpu0/...``, or ``<node>/gpu0/...`` when several
    nodes were sampled."""
    rows = list(csv.DictReader(io.StringIO(text)))
    several = len({row["node"] for row in rows}) > 1
    steps: dict[tuple[str, str], int] = {}
    points = []
    for row in rows:
        step = steps.get((row["node"], row["gpu"]), 0)
        steps[(row["node"], row["gpu"])] = step + 1
        label = f"{row['node']}/gpu{row['gpu']}" if several else f"gpu{row['gpu']}"
        stamp = round(float(row["time"]) * 1000)
        for key in SERIES:
            if row[key] != "":
                points.append((f"{label}/{key}", float(row[key]), stamp, step))
    return points


def tokens_per_joule(phases: list[PhaseSummary], tokens: dict[str, int]) -> dict[str, float]:
    """Tokens (read and generated) per joule of every GPU, for each dataset whose energy is
    known."""
    out = {}
    for phase in phases:
        n = tokens.get(phase.name)
        if n and phase.energy_j:
            out[phase.name] = n / phase.energy_j
    return out
