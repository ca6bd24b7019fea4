"""A dataset's per-sample results as an MLflow table: what MLflow's own UI shows and compares.

``samples/<dataset>.jsonl.gz`` (lm-eval's sample records, whole) stays the record; this is the
view of it people compare in MLflow: one row per sample record (a document, under one filter),
its columns the join keys, short texts and the per-sample scores, written in the format
``mlflow.log_table`` writes (pandas' ``orient="split"`` JSON without index) and logged as
``samples/<dataset>.table.json`` on the dataset's child run, with the run tag
``mlflow.loggedArtifacts`` naming it a table. The same artifact name on every run is what lets
MLflow's "Artifact evaluation" view line the runs up sample by sample
(docs/tracking-and-report.md, "Per-sample tables").

Texts are capped (``PROMPT_CHARS``, ``TEXT_CHARS``) so a 14,042-document MMLU stays a table a
browser opens; every text is masked again (``harness.secrets``) as every file harness writes.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from harness.record.rundir import read_sample_records
from harness.record.sample_identity import arguments_hash
from harness.secrets import env_secrets, mask

PROMPT_CHARS = 300
"""Characters of the prompt a row keeps: its end (the question comes after any few-shot
examples), behind an ellipsis."""
TEXT_CHARS = 200
"""Characters of the target and of the model's answer a row keeps (their start)."""
KEY_COLUMNS = ("sample", "prompt", "target", "output")
"""The first columns, in order, then the scores. ``sample`` (``<task>/<doc_id>``, then
``/<filter>`` past ``none``) is first because MLflow's compare view groups by the first column;
``output`` is the column it shows per run by default (MLflow's default output column's name)."""
JOIN_COLUMNS = ("task", "doc_id", "filter", "request_hash")
"""The last columns: the sample's identity, field by field; ``request_hash`` is
``arguments_hash`` of its requests, which a join checks besides the document."""
LOGGED_ARTIFACTS_TAG = "mlflow.loggedArtifacts"
"""The run tag MLflow's UI and ``load_table`` read to know which artifacts are tables."""


def table_artifact(dataset: str) -> str:
    """The table's artifact path on the dataset's child run, the same on every run."""
    return f"samples/{dataset}.table.json"


def tables_tag(datasets: list[str]) -> str:
    """The ``mlflow.loggedArtifacts`` value naming these datasets' tables (as ``log_table``
    writes it, so ``load_table``'s search finds each)."""
    return json.dumps([{"path": table_artifact(d), "type": "table"} for d in datasets])


def _text(value: Any) -> str:
    """A context or an answer as text: a chat prompt lm-eval passes as a one-item list unwrapped."""
    while isinstance(value, list | tuple) and len(value) == 1:
        value = value[0]
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)


def _head(text: str, secrets: list[str]) -> str:
    return mask(text if len(text) <= TEXT_CHARS else text[:TEXT_CHARS] + "…", secrets)


def _prompt(arguments: list[Any], secrets: list[str]) -> str:
    first = arguments[0] if arguments else ""
    context = _text(first[0] if isinstance(first, list | tuple) and first else first)
    shown = context if len(context) <= PROMPT_CHARS else "…" + context[-PROMPT_CHARS:]
    return mask(shown, secrets)


def _choices(record: dict[str, Any]) -> list[str] | None:
    """A multiple choice's continuations (one loglikelihood request each), else None."""
    arguments = record.get("arguments") or []
    responses = record.get("filtered_resps") or []
    pairs = all(isinstance(a, list | tuple) and len(a) == 2 for a in arguments)
    scored = all(
        isinstance(r, list | tuple) and r and isinstance(r[0], int | float) for r in responses
    )
    if arguments and pairs and scored and len(responses) == len(arguments):
        return [_text(a[1]).strip() for a in arguments]
    return None


def _output(record: dict[str, Any], choices: list[str] | None, secrets: list[str]) -> str:
    """What the model answered: the continuation it scored likeliest, or its filtered text."""
    responses = record.get("filtered_resps") or []
    if choices is not None:
        best = max(range(len(responses)), key=lambda i: responses[i][0])
        return _head(choices[best], secrets)
    return _head(_text(responses), secrets)


def _target(record: dict[str, Any], choices: list[str] | None, secrets: list[str]) -> str:
    """The target as text: a multiple choice's index shown as its continuation."""
    target = record.get("target")
    if choices is not None and isinstance(target, int) and 0 <= target < len(choices):
        return _head(choices[target], secrets)
    return _head(_text(target), secrets)


def _score(value: Any, secrets: list[str]) -> Any:
    """A per-sample score as a cell: a number as a float, anything else (a pair a corpus metric
    aggregates later) as capped JSON."""
    if isinstance(value, bool | int | float):
        number = float(value)
        return number if math.isfinite(number) else None  # JSON.parse refuses NaN
    return _head(_text(value), secrets)


def sample_row(record: dict[str, Any], secrets: list[str] | None = None) -> dict[str, Any]:
    """One lm-eval sample record (with harness's ``task``) as a table row, scores under the
    names of its ``metrics``; ``secrets`` the environment's (``env_secrets()``, read once per
    table: reading it per cell was most of a table's time)."""
    secrets = env_secrets() if secrets is None else secrets
    task, doc_id = str(record.get("task", "")), record.get("doc_id")
    filt = str(record.get("filter", "none"))
    arguments = record.get("arguments") or []
    choices = _choices(record)
    key = f"{task}/{doc_id}" + ("" if filt == "none" else f"/{filt}")
    row: dict[str, Any] = {
        "sample": key,
        "prompt": _prompt(arguments, secrets),
        "target": _target(record, choices, secrets),
        "output": _output(record, choices, secrets),
    }
    for metric in record.get("metrics") or []:
        if metric in record and metric not in (*KEY_COLUMNS, *JOIN_COLUMNS):
            row[metric] = _score(record[metric], secrets)
    identity = (task, doc_id, filt, arguments_hash(arguments))
    return row | dict(zip(JOIN_COLUMNS, identity, strict=True))


def samples_table(path: Path) -> dict[str, list[Any]]:
    """The samples file ``path`` (JSONL in gzip) as ``{"columns": [...], "data": [[...]]}``:
    the key columns, every metric seen (first seen first; a record without it gets null), the
    join columns.

    Raises:
        OSError, EOFError, ValueError: the file is missing, cut short or not JSON lines.
    """
    secrets = env_secrets()
    rows = [sample_row(record, secrets) for record in read_sample_records(path)]
    metrics: dict[str, None] = {}
    for row in rows:
        metrics.update(dict.fromkeys(k for k in row if k not in (*KEY_COLUMNS, *JOIN_COLUMNS)))
    columns = [*KEY_COLUMNS, *metrics, *JOIN_COLUMNS]
    return {"columns": columns, "data": [[row.get(c) for c in columns] for row in rows]}


def write_samples_table(samples: Path, out: Path) -> None:
    """Write ``samples``' table to ``out`` (JSON, UTF-8)."""
    table = samples_table(samples)
    out.write_text(json.dumps(table, ensure_ascii=False, allow_nan=False), encoding="utf-8")
