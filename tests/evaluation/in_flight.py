"""What a run recorded of its datasets at once, read back from every place it is written."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import json_lines

PLACES = ("plan.json", "summary.json", "mlflow", "events")
"""Where ``recorded_at_once`` reads the number: the plan's three records, and the events."""


def most_in_flight(run_dir: Path) -> int:
    """The most datasets in flight together in the run's events (started, not yet done)."""
    now = most = 0
    for event in json_lines(run_dir / "events.jsonl"):
        if event["event"] == "dataset_started":
            now += 1
            most = max(most, now)
        elif event["event"] in ("dataset_done", "dataset_failed"):
            now -= 1
    return most


def recorded_at_once(run_dir: Path, db: Path) -> dict[str, object]:
    """``datasets_at_once`` as plan.json, summary.json and MLflow's parent run hold it, and the
    number the events show in flight together."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    (experiment,) = [e for e in client.search_experiments() if e.name == "harness"]
    runs = client.search_runs([experiment.experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("mlflow.parentRunId") is None]
    return {
        "plan.json": json.loads((run_dir / "plan.json").read_text())["datasets_at_once"],
        "summary.json": json.loads((run_dir / "summary.json").read_text())["plan"][
            "datasets_at_once"
        ],
        "mlflow": int(parent.data.params["plan.datasets_at_once"]),
        "events": most_in_flight(run_dir),
    }
