"""Find a run named on the command line and the files a comparison reads from it.

``RUN`` is one of:

- a run directory (a folder holding ``summary.json``): read in place, no MLflow needed;
- ``key=value[,key=value...]`` with keys ``model``, ``strategy`` and ``checkpoint``: the latest
  FINISHED or FAILED parent run in MLflow with those tags (``checkpoint`` matches the
  ``model.pretrained`` param as typed, as a resolved path, or as its last folders);
- anything else: an MLflow parent run id.

A run read from MLflow has its ``summary.json`` (parent run) and each dataset's result and
samples (child runs) downloaded into a scratch folder laid out as a run directory, so that both
sources are read by the same code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.compare.samples import CompareError
from harness.record.rundir import RunDirectory
from harness.record.summary import RunSummary

SELECTOR_KEYS = ("model", "strategy", "checkpoint")
"""The keys of a ``key=value,...`` run selector."""


@dataclass
class DatasetFiles:
    """One dataset of a run: its lm-eval result and its samples file."""

    name: str
    """The dataset's name in the run."""
    task: str
    """Its lm-eval task or group."""
    result: dict[str, Any]
    """lm-eval's result (versions, n-samples, group_subtasks, results)."""
    samples: Path | None
    """``samples/<dataset>.jsonl.gz``, None when the run did not log samples."""
    cost: dict[str, float | None] = field(default_factory=dict)
    """``tokens_per_s``, ``energy_j``, ``peak_memory_gib`` of the dataset (None: not logged)."""


@dataclass
class RecordedRun:
    """A run a comparison reads."""

    ref: str
    """The RUN as given on the command line."""
    run_id: str
    """Its MLflow parent run id, or its run directory's path when it was never tracked."""
    name: str
    """``model/strategy`` with the run directory's name or the MLflow run's name."""
    model: str
    """Its model."""
    strategy: str
    """Its strategy."""
    checkpoint: str
    """The checkpoint the engine loaded (resolved path or hub id)."""
    root: Path
    """The run directory read (a scratch copy for a run read from MLflow)."""
    source: str
    """``run_dir`` or ``mlflow``."""
    load_time_s: float | None
    """Its model load time."""
    datasets: dict[str, DatasetFiles] = field(default_factory=dict)
    """Its datasets that finished, by name."""

    def describe(self) -> dict[str, Any]:
        """What compare.json says of the run."""
        return {
            "run_id": self.run_id,
            "name": self.name,
            "model": self.model,
            "strategy": self.strategy,
            "checkpoint": self.checkpoint,
            "source": self.source,
            "ref": self.ref,
        }


def parse_selector(ref: str) -> dict[str, str] | None:
    """``model=a,strategy=b`` as a dict; None when ``ref`` is no selector.

    Raises:
        CompareError: a key that is not one of ``SELECTOR_KEYS``, or a key without a value.
    """
    if "=" not in ref:
        return None
    parts = dict(p.partition("=")[::2] for p in ref.split(",") if p)
    bad = [k for k, v in parts.items() if k not in SELECTOR_KEYS or not v]
    if bad:
        raise CompareError(
            f"run selector {ref!r}: {', '.join(repr(b) for b in bad)} is not key=value with a key "
            f"among {', '.join(SELECTOR_KEYS)}. Fix: write e.g. model=tiny_char or "
            "model=tiny_char,strategy=single,checkpoint=plugins/models/tiny_char"
        )
    return parts


def from_run_dir(ref: str, root: Path, source: str = "run_dir", run_id: str = "") -> RecordedRun:
    """A run read from its run directory (or a scratch copy laid out as one)."""
    run_dir = RunDirectory(root)
    summary = run_dir.read_summary()
    if summary is None:
        raise CompareError(
            f"run {ref!r}: {run_dir.summary} is missing or unreadable: a comparison reads a "
            "finished run's summary. Fix: name a run directory of a run that ended (or replay "
            "it into MLflow and name its run id)"
        )
    phases = (summary.telemetry or {}).get("phases") or {}
    datasets: dict[str, DatasetFiles] = {}
    for name, outcome in summary.datasets.items():
        result_path = run_dir.dataset_result(name)
        if outcome.status != "ok" or not result_path.is_file():
            continue
        samples = run_dir.dataset_samples(name)
        phase = phases.get(name) or {}
        datasets[name] = DatasetFiles(
            name=name,
            task=outcome.task,
            result=json.loads(result_path.read_text(encoding="utf-8")),
            samples=samples if samples.is_file() else None,
            cost={
                "tokens_per_s": outcome.tokens_per_s or None,
                "energy_j": phase.get("energy_j"),
                "peak_memory_gib": phase.get("peak_memory_gib"),
            },
        )
    tracked = (summary.tracking or {}).get("run_id")
    return RecordedRun(
        ref=ref,
        run_id=run_id or tracked or str(root.resolve()),
        name=f"{summary.model}/{summary.strategy} {Path(summary.run_dir or root).name}",
        model=summary.model,
        strategy=summary.strategy,
        checkpoint=_checkpoint(summary),
        root=root,
        source=source,
        load_time_s=summary.load_time_s or None,
        datasets=datasets,
    )


def _checkpoint(summary: RunSummary) -> str:
    engine = summary.engine or {}
    facts = (summary.plan or {}).get("model_facts") or {}
    return str(engine.get("pretrained") or facts.get("pretrained") or "")


def resolve(ref: str, mlflow: Any | None, scratch: Path) -> RecordedRun:
    """The run ``ref`` names (see the module's doc); ``mlflow`` reads MLflow (``MlflowRuns``),
    None when no tracking store is available.

    Raises:
        CompareError: the run is not found, or names MLflow where none is available.
    """
    path = Path(ref)
    if path.is_dir():
        return from_run_dir(ref, path)
    selector = parse_selector(ref)
    if mlflow is None:
        raise CompareError(
            f"run {ref!r} is no run directory (no such folder) and no MLflow store is available "
            "to look it up. Fix: name a run directory, or give --tracking-uri for a run id or a "
            "model=... selector"
        )
    run_id = mlflow.latest(selector, ref) if selector is not None else ref
    root = mlflow.download(run_id, ref, scratch / run_id)
    run = from_run_dir(ref, root, source="mlflow", run_id=run_id)
    run.name = mlflow.run_name(run_id) or run.name
    return run
