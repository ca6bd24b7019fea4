"""The run directory: what one run leaves on disk, every file named here and nowhere else.

| file | written by | what it holds |
| --- | --- | --- |
| ``config.yaml`` | the run, plan-only too | the config as typed (resolved, masked) |
| ``plan.json`` | the run, plan-only, a sweep's planning | the deployment as planned |
| ``events.jsonl`` | the run, line by line | what happened when (harness/record/events.py) |
| ``results/<dataset>.json`` | each dataset that finished | lm-eval's result |
| ``results/<dataset>.error.json`` | each dataset that failed | its error and traceback |
| ``samples/<dataset>.jsonl.gz`` | ``log_samples=true`` | lm-eval's per-sample records |
| ``telemetry.json``, ``.csv``, ``.png`` | GPU telemetry | phases, readings, the plot |
| ``reproducibility.json`` | the run | code, libraries, host, seeds (provenance.py) |
| ``summary.json`` | the finished run | ``RunSummary`` (harness/record/summary.py) |
| ``harness.log`` | Hydra's file handler (conf/config.yaml) | the run's log |
| ``.hydra/*.yaml`` | Hydra | the job's config and overrides, masked here |

Every write goes through ``harness.record.files`` (atomic, masked); every reader (replay,
tracking, telemetry, a sweep's outcome) asks ``RunDirectory`` for the path.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

from harness.record.config_yaml import config_yaml
from harness.record.files import json_default, write_json_atomic, write_text_atomic
from harness.record.summary import RunSummary
from harness.secrets import mask

_LEGACY_SAMPLES = ".samples.json"
"""Where commits before the samples folder kept a dataset's samples (``results/``)."""


class RunDirectory:
    """The files of one run directory, by what they hold (the table above)."""

    CONFIG = "config.yaml"
    PLAN = "plan.json"
    EVENTS = "events.jsonl"
    SUMMARY = "summary.json"
    REPRODUCIBILITY = "reproducibility.json"
    LOG = "harness.log"
    RESULTS = "results"
    SAMPLES = "samples"
    TELEMETRY = ("telemetry.json", "telemetry.csv", "telemetry.png")

    def __init__(self, root: Path) -> None:
        self.root = root
        self.config = root / self.CONFIG
        """The config as typed."""
        self.plan = root / self.PLAN
        """The deployment as planned."""
        self.events = root / self.EVENTS
        """The live record, one JSON line per event."""
        self.summary = root / self.SUMMARY
        """What the run did, written once it finished."""
        self.reproducibility = root / self.REPRODUCIBILITY
        """Code, libraries, host and seeds."""
        self.log = root / self.LOG
        """The run's log (Hydra writes it: conf/config.yaml names the same file)."""
        self.results_dir = root / self.RESULTS
        """Each dataset's result or error."""
        self.samples_dir = root / self.SAMPLES
        """Each dataset's samples (``log_samples=true``)."""
        self.telemetry_json, self.telemetry_csv, self.telemetry_png = (
            root / name for name in self.TELEMETRY
        )
        """Telemetry's figures, its readings, its plot."""

    def dataset_result(self, name: str) -> Path:
        """``results/<name>.json``: a finished dataset's lm-eval result."""
        return self.results_dir / f"{name}.json"

    def dataset_error(self, name: str) -> Path:
        """``results/<name>.error.json``: why a dataset failed."""
        return self.results_dir / f"{name}.error.json"

    def dataset_samples(self, name: str) -> Path:
        """``samples/<name>.jsonl.gz``: a dataset's samples, one record a line."""
        return self.samples_dir / f"{name}.jsonl.gz"

    def telemetry_files(self) -> tuple[Path, Path, Path]:
        """telemetry.json, telemetry.csv and telemetry.png."""
        return self.telemetry_json, self.telemetry_csv, self.telemetry_png

    def write_config(self, config: dict[str, Any]) -> Path:
        """``config.yaml``: the config as typed (a plain tree: resolved, masked)."""
        write_text_atomic(self.config, config_yaml(config))
        return self.config

    def write_plan(self, plan: dict[str, Any]) -> Path:
        """``plan.json``: the deployment as planned (the only truth of what runs)."""
        write_json_atomic(self.plan, plan)
        return self.plan

    def write_result(self, name: str, result: dict[str, Any]) -> tuple[Path, Path | None]:
        """Store one dataset's lm-eval result as ``results/<name>.json`` and, when lm-eval logged
        samples, those as ``samples/<name>.jsonl.gz`` (one record per line, each with its
        ``task``); returns both paths (None for samples not logged)."""
        result = dict(result)
        samples = result.pop("samples", None)
        path = self.dataset_result(name)
        write_json_atomic(path, result)
        if not samples:
            return path, None
        lines = [
            json.dumps({"task": task, **record}, default=json_default, ensure_ascii=False) + "\n"
            for task, records in samples.items()
            for record in records
        ]
        samples_path = self.dataset_samples(name)
        write_text_atomic(samples_path, "".join(lines), compress=True)
        return path, samples_path

    def write_error(self, name: str, error: dict[str, Any]) -> Path:
        """Record why a dataset failed (type, message, traceback) beside the results."""
        path = self.dataset_error(name)
        write_json_atomic(path, error)
        return path

    def write_summary(self, summary: RunSummary) -> Path:
        """``summary.json``: what the run did."""
        write_json_atomic(self.summary, summary.to_dict())
        return self.summary

    def read_config(self) -> dict[str, Any]:
        """The config as typed (empty when the file is)."""
        import yaml

        return yaml.safe_load(self.config.read_text(encoding="utf-8")) or {}

    def read_plan(self) -> dict[str, Any]:
        """The plan as written, or empty when there is none."""
        return _read_json(self.plan) or {}

    def read_summary(self) -> RunSummary | None:
        """summary.json as ``RunSummary`` (written by this commit or an earlier one), or None
        when there is none or it cannot be read."""
        data = _read_json(self.summary)
        return RunSummary.from_dict(data) if isinstance(data, dict) else None

    def read_reproducibility(self) -> dict[str, Any]:
        """reproducibility.json, or empty when there is none or it cannot be read."""
        data = _read_json(self.reproducibility)
        return data if isinstance(data, dict) else {}

    def holds_run(self) -> bool:
        """Whether a run (not a plan only) has started here: its events.jsonl has a line."""
        return self.events.is_file() and self.events.stat().st_size > 0

    def config_differences(self, config: dict[str, Any]) -> list[str]:
        """The dotted keys whose value differs between ``config`` (as typed, masked) and this
        directory's ``config.yaml``, as the file would read back; every key when it has none."""
        import yaml

        before = self.read_config() if self.config.is_file() else {}
        now = yaml.safe_load(config_yaml(config)) or {}
        flat_before, flat_now = _flat(before), _flat(now)
        keys = sorted(set(flat_before) | set(flat_now))
        return [k for k in keys if flat_before.get(k, _ABSENT) != flat_now.get(k, _ABSENT)]

    def written_results(self) -> tuple[list[str], list[str]]:
        """The datasets with a result and those with an error in ``results/`` (what a run that
        ended before its summary had finished)."""
        names = sorted(p.name for p in self.results_dir.glob("*.json"))
        failed = [n.removesuffix(".error.json") for n in names if n.endswith(".error.json")]
        done = [
            n.removesuffix(".json")
            for n in names
            if not n.endswith((".error.json", _LEGACY_SAMPLES))
        ]
        return done, failed


_ABSENT = object()
"""A key one of two configs lacks."""


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    """A config tree as ``{dotted key: leaf value}`` (a list is one value)."""
    if not isinstance(tree, dict) or not tree:
        return {prefix: tree} if prefix else {}
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        flat |= _flat(value, f"{prefix}.{key}" if prefix else str(key))
    return flat


def _read_json(path: Path) -> Any:
    """A JSON file's content, or None when it is absent or not JSON."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def mask_files(folder: Path, pattern: str = "*.yaml") -> None:
    """Mask the files matching ``pattern`` in ``folder`` in place (Hydra's ``.hydra/``)."""
    for path in sorted(folder.glob(pattern)):
        text = path.read_text(encoding="utf-8")
        if mask(text) != text:
            write_text_atomic(path, text)  # it masks on the way out


def mask_hydra_files() -> None:
    """Mask Hydra's record of this job (``<run dir>/.hydra/*.yaml``: the overrides as typed) and,
    in a sweep, of the sweep (``multirun.yaml``)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return
    hydra = HydraConfig.get()
    if hydra.output_subdir is not None:
        mask_files(Path(hydra.runtime.output_dir) / str(hydra.output_subdir))
    if hydra.sweep.dir:  # a sweep's multirun.yaml (absent for a single run)
        mask_files(Path(str(hydra.sweep.dir)), "multirun.yaml")


def read_sample_records(path: Path) -> list[dict[str, Any]]:
    """The records of a samples file ``write_result`` wrote (``samples/<name>.jsonl.gz``), in
    order: the one reader of that format (the comparison, the MLflow tables).

    Raises:
        OSError, EOFError: the file is missing or cut short; ValueError: a line is not JSON.
    """
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]
