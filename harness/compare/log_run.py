"""A comparison logged into MLflow: one run per candidate in the experiment ``harness-compare``
of the same store, tagged with its baseline's and candidate's run ids and the verdict, its rows'
figures as metrics (``<dataset>/difference``, ``<dataset>/<subtask>/p_value``, ...) and
compare.json as an artifact.

A separate experiment keeps the evaluations' runs table one row per evaluation (the report and
the shared view read that one), while MLflow's UI compares comparison runs among themselves.
Logging never fails the comparison: a store that cannot be written is a warning.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from harness.record.groups import member_key

log = logging.getLogger(__name__)

EXPERIMENT = "harness-compare"
"""The experiment comparison runs are logged in."""
BASELINE_TAG, CANDIDATE_TAG = "harness.compare.baseline", "harness.compare.candidate"
"""Tags naming the runs compared (MLflow parent run ids, or run directories never tracked)."""
FIGURES = (
    "difference",
    "ci_low",
    "ci_high",
    "p_value",
    "p_value_holm",
    "flips_better",
    "flips_worse",
    "shared",
    "baseline",
    "candidate_value",
)
"""A row's figures logged as metrics."""


def row_metrics(rows: list[dict[str, Any]]) -> dict[str, float]:
    """One candidate's rows as MLflow metrics: ``<dataset>/<figure>`` for the dataset's row,
    ``<dataset>/<subtask>/<figure>`` for a group's members."""
    metrics: dict[str, float] = {}
    for row in rows:
        prefix = row["dataset"] if row["subtask"] is None else f"{row['dataset']}/{row['subtask']}"
        for figure in FIGURES:
            value = row.get(figure)
            if isinstance(value, int | float) and math.isfinite(float(value)):
                metrics[member_key(prefix, figure)] = float(value)
    return metrics


def log_comparison(uri: str, document: dict[str, Any], compare_json: Path) -> list[str]:
    """Log one MLflow run per candidate; returns their run ids (empty when logging failed,
    after a warning naming why)."""
    try:
        return _log(uri, document, compare_json)
    except Exception as err:  # tracking never fails the comparison
        log.warning(
            "the comparison was not logged to MLflow at %s (%s: %s); compare.json holds it",
            uri,
            type(err).__name__,
            str(err).splitlines()[0][:300] if str(err) else "",
        )
        return []


def _log(uri: str, document: dict[str, Any], compare_json: Path) -> list[str]:
    from mlflow.entities import Metric, RunTag
    from mlflow.tracking import MlflowClient

    from harness.tracking.names import mlflow_defaults

    mlflow_defaults()
    client = MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(EXPERIMENT)
    experiment = found.experiment_id if found else client.create_experiment(EXPERIMENT)
    baseline = document["baseline"]
    ids = []
    for cand in document["candidates"]:
        rows = [r for r in document["rows"] if r["candidate"] == cand["run_id"]]
        verdicts = {r["verdict"] for r in rows if r["subtask"] is None}
        verdict = next((v for v in ("worse", "better") if v in verdicts), "same")
        tags = {
            BASELINE_TAG: baseline["run_id"],
            CANDIDATE_TAG: cand["run_id"],
            "verdict": verdict,
            "baseline": baseline["name"],
            "candidate": cand["name"],
            "gate_exit_code": str(document["exit_code"]),
        }
        run = client.create_run(
            experiment, run_name=f"{cand['name']} vs {baseline['name']}"[:250], tags=tags
        )
        run_id = run.info.run_id
        stamp = int(run.info.start_time or 0)
        metrics = [Metric(k, v, stamp, 0) for k, v in row_metrics(rows).items()]
        for start in range(0, len(metrics), 1000):  # MLflow's limit per log_batch
            client.log_batch(run_id, metrics=metrics[start : start + 1000])
        client.log_batch(run_id, tags=[RunTag("format", document["format"])])
        client.log_artifact(run_id, str(compare_json))
        client.set_terminated(run_id, "FINISHED")
        ids.append(run_id)
    return ids
