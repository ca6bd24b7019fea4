"""The run directory: what one run leaves on disk, every file named here.

Per-dataset results in lm-eval's JSON shape, the config as typed, the plan, a summary; Hydra's own
record of the job masked in place. Every write goes through ``harness.record.files``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness.record.files import json_default, write_json_atomic, write_text_atomic
from harness.secrets import mask

_READS_AS_BOOL = {
    *("y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO", "true", "True", "TRUE"),
    *("false", "False", "FALSE", "on", "On", "ON", "off", "Off", "OFF"),
}
"""Strings that YAML 1.1 (and so OmegaConf) reads back as a bool unless quoted."""


def config_yaml(config: dict[str, Any]) -> str:
    """``config`` as YAML, the very text ``OmegaConf.to_yaml`` writes, through libyaml's emitter
    where it is built (about 10x faster: a plan-only call writes one, tests/record holds them
    equal). As OmegaConf does, a string that would read back as a bool or a number is quoted."""
    import yaml

    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)

    class ConfigDumper(dumper):  # type: ignore[misc, valid-type]
        pass

    def string(dumper: Any, data: str) -> Any:
        quoted = data in _READS_AS_BOOL or _reads_as_number(data)
        tag = "tag:yaml.org,2002:str"
        return dumper.represent_scalar(tag, data, style="'" if quoted else None)

    ConfigDumper.add_representer(str, string)
    text = yaml.dump(
        config, Dumper=ConfigDumper, default_flow_style=False, allow_unicode=True, sort_keys=False
    )
    return str(text)


def _reads_as_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


class RunDirectory:
    """Files of one run: ``config.yaml``, ``plan.json``, ``results/<dataset>.json`` (and
    ``.error.json``), ``samples/<dataset>.jsonl.gz``, ``summary.json``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.results_dir = root / "results"

    def dataset_result(self, name: str) -> Path:
        return self.results_dir / f"{name}.json"

    def write_config(self, config: dict[str, Any]) -> Path:
        """``config.yaml``: the config as typed (a plain tree: resolved, masked)."""
        path = self.root / "config.yaml"
        write_text_atomic(path, config_yaml(config))
        return path

    def write_plan(self, plan: dict[str, Any]) -> Path:
        """``plan.json``: the deployment as planned (the only truth of what runs)."""
        path = self.root / "plan.json"
        write_json_atomic(path, plan)
        return path

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
        samples_path = self.root / "samples" / f"{name}.jsonl.gz"
        write_text_atomic(samples_path, "".join(lines), compress=True)
        return path, samples_path

    def write_error(self, name: str, error: dict[str, Any]) -> Path:
        """Record why a dataset failed (type, message, traceback) beside the results."""
        path = self.results_dir / f"{name}.error.json"
        write_json_atomic(path, error)
        return path

    def write_summary(self, summary: dict[str, Any]) -> Path:
        path = self.root / "summary.json"
        write_json_atomic(path, summary)
        return path


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
