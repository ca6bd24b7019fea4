"""The run directory: per-dataset results in lm-eval's JSON shape, the resolved config, a summary.

Every file is written atomically (temporary file, fsync, rename), so a reader never sees half of it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from harness.secrets import mask

log = logging.getLogger(__name__)

_UMASK = os.umask(0)
os.umask(_UMASK)


def _default(obj: Any) -> Any:
    """JSON for what lm-eval's results hold besides plain data (numpy scalars, callables, sets)."""
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, set | tuple):
        return list(obj)
    return str(obj)


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that the file is either old or complete, never partial.

    Secrets in it (tokens, keys, credentials in URIs) are masked first (harness/secrets.py).
    """
    text = mask(text)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; results are meant to be shared
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, obj: Any) -> None:
    """Atomically write ``obj`` as indented JSON (lm-eval's non-JSON values made plain)."""
    write_text_atomic(path, json.dumps(obj, indent=2, default=_default, ensure_ascii=False) + "\n")


def metric_items(entry: dict[str, Any]) -> dict[str, float]:
    """Numeric metrics of one lm-eval result entry, named for MLflow.

    lm-eval keys metrics as ``"<metric>,<filter>"`` (``"acc,none"``); MLflow names may not hold
    commas, so ``acc,none`` becomes ``acc`` and ``exact_match,strict-match`` becomes
    ``exact_match/strict-match``. Non-numbers (``"N/A"`` stderr, aliases) are left out.
    """
    out: dict[str, float] = {}
    for key, value in entry.items():
        if "," not in key or isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if isinstance(value, float) and not math.isfinite(value):
            continue
        metric, _, filt = key.partition(",")
        out[metric if filt == "none" else f"{metric}/{filt}"] = float(value)
    return out


def headline_entry(result: dict[str, Any], task: str) -> dict[str, Any]:
    """The result entry that stands for the whole dataset: its group, else its task."""
    groups = result.get("groups") or {}
    if task in groups:
        return dict(groups[task])
    results = result.get("results") or {}
    if task in results:
        return dict(results[task])
    if len(results) == 1:
        return dict(next(iter(results.values())))
    return {}


class RunDirectory:
    """Files of one run: ``results/<dataset>.json``, ``config.yaml``, ``summary.json``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.results_dir = root / "results"

    def dataset_result(self, name: str) -> Path:
        return self.results_dir / f"{name}.json"

    def write_config(self, yaml_text: str) -> Path:
        path = self.root / "config.yaml"
        write_text_atomic(path, yaml_text)
        return path

    def write_result(self, name: str, result: dict[str, Any]) -> Path:
        """Store one dataset's lm-eval result (samples go to a file of their own)."""
        result = dict(result)
        samples = result.pop("samples", None)
        path = self.dataset_result(name)
        write_json_atomic(path, result)
        if samples is not None:
            write_json_atomic(self.results_dir / f"{name}.samples.json", samples)
        return path

    def write_error(self, name: str, error: dict[str, Any]) -> Path:
        """Record why a dataset failed (type, message, traceback) beside the results."""
        path = self.results_dir / f"{name}.error.json"
        write_json_atomic(path, error)
        return path

    def write_summary(self, summary: dict[str, Any]) -> Path:
        path = self.root / "summary.json"
        write_json_atomic(path, summary)
        return path


STORE_FORMAT = "harness-store/1"


class ResultStore:
    """Completed dataset results across runs, keyed by fingerprint; what makes a run resumable.

    A record is written atomically and only after its dataset finished, and carries a checksum
    of its payload: a torn, truncated or edited file fails the check and is evaluated again.
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, dataset: str, fingerprint: str) -> Path:
        return self.root / f"{dataset}-{fingerprint}.json"

    def save(
        self,
        dataset: str,
        fingerprint: str,
        key: dict[str, Any],
        outcome: dict[str, Any],
        result: dict[str, Any],
    ) -> Path:
        payload = {"key": key, "outcome": outcome, "result": result}
        text = json.dumps(payload, sort_keys=True, default=_default, ensure_ascii=False)
        text = mask(text)  # what is hashed is what is written (the write masks too)
        record = {
            "format": STORE_FORMAT,
            "fingerprint": fingerprint,
            "sha256": hashlib.sha256(text.encode()).hexdigest(),
            "payload": json.loads(text),
        }
        path = self.path(dataset, fingerprint)
        write_json_atomic(path, record)
        return path

    def load(self, dataset: str, fingerprint: str) -> dict[str, Any] | None:
        """The stored payload (key, outcome, result), or None when absent or not intact."""
        path = self.path(dataset, fingerprint)
        if not path.is_file():
            return None
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            text = json.dumps(record["payload"], sort_keys=True, ensure_ascii=False)
            intact = (
                record.get("format") == STORE_FORMAT
                and record.get("fingerprint") == fingerprint
                and hashlib.sha256(text.encode()).hexdigest() == record.get("sha256")
            )
        except (OSError, ValueError, KeyError, TypeError) as err:
            log.warning("stored result %s is unreadable (%s); evaluating again", path, err)
            return None
        if not intact:
            log.warning("stored result %s fails its checksum; evaluating again", path)
            return None
        payload: dict[str, Any] = record["payload"]
        return payload
