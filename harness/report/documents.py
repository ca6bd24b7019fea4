"""How many documents each figure stands on: lm-eval's ``n-samples`` of the dataset's result.

Each finished dataset's child run holds its lm-eval result as the artifact ``<dataset>.json``
(harness/tracking/rundir.py logs ``results/<dataset>.json``, the live run and replay alike). Its
``n-samples`` gives, per task, the documents of the evaluated split (``original``) and those
evaluated (``effective``: after ``limit`` or ``samples``). Reading it from the result keeps the
count true for every run ever logged, with nothing logged twice.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from harness.report.runs import DatasetRun

log = logging.getLogger(__name__)

READERS = 4
"""Results downloaded at once (a server answers each in its own round trip)."""


def effective_counts(result: dict[str, Any]) -> dict[str, int]:
    """Each task's evaluated documents from an lm-eval result (``n-samples``)."""
    counts = {}
    for task, entry in (result.get("n-samples") or {}).items():
        if isinstance(entry, dict) and isinstance(entry.get("effective"), int):
            counts[task] = int(entry["effective"])
    return counts


def _read_one(uri: str, dataset: DatasetRun, folder: Path) -> dict[str, int]:
    from mlflow.artifacts import download_artifacts

    try:  # by the run's artifact URI: no look-up of the run (a store's round trip) per result
        where = download_artifacts(
            artifact_uri=f"{dataset.artifact_uri}/{dataset.name}.json",
            dst_path=str(folder),
            tracking_uri=uri,
        )
        return effective_counts(json.loads(Path(where).read_text(encoding="utf-8")))
    except Exception as err:  # no result logged (a failed dataset, a run cut short): no count
        log.info("no document count for %s (%s: %s)", dataset.name, type(err).__name__, err)
        return {}


def read_documents(uri: str, datasets: Sequence[DatasetRun]) -> None:
    """Fill each finished dataset's ``n_samples`` from its child run's result (``uri``: the
    tracking URI, for a server's proxied artifacts)."""
    finished = [d for d in datasets if d.status == "FINISHED" and d.artifact_uri]
    if not finished:
        return
    with tempfile.TemporaryDirectory(prefix="harness-report-") as tmp:
        folders = [Path(tmp) / str(i) for i in range(len(finished))]
        for folder in folders:
            folder.mkdir()
        with ThreadPoolExecutor(max_workers=READERS) as pool:
            counts = list(
                pool.map(lambda a: _read_one(uri, *a), zip(finished, folders, strict=True))
            )
    for dataset, found in zip(finished, counts, strict=True):
        dataset.n_samples = found
