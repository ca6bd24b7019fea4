"""Replay completes a partial live log in place (issue 35): the tracker, given the runs already
in MLflow (``adopt``), logs onto them instead of creating new ones, adds only what they lack
(no metric point repeated) and sets their end; a dataset's run it does not hold is created."""

from __future__ import annotations

import pytest

from harness.config.schema import TrackingBackend, TrackingConfig
from harness.tracking import Tracker

pytestmark = pytest.mark.slow  # a real SQLite MLflow store (its schema takes seconds)


def test_adopted_runs_are_completed_not_rewritten(tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    target = TrackingConfig(backend=TrackingBackend.mlflow, uri=uri, experiment="adopt")
    live = Tracker(target, uid="u" * 32)  # the live run, cut short: one dataset logged
    live.start("m/s", params={"model.name": "m"}, tags={})
    done = live.child("a", {"task": "a"}, {})
    live.log_metrics({"acc": 0.5}, run=done)
    live.end(run=done)
    live.child("b", {"task": "b"}, {})
    live.end(status="KILLED")
    live.close()
    client = MlflowClient(tracking_uri=uri)
    runs = {r.info.run_name: r for r in client.search_runs([live.experiment_id])}
    ids = {name: r.info.run_id for name, r in runs.items()}

    adopt = {"": ids["m/s"], "a": ids["a"]}
    again = Tracker(target, uid="u" * 32, adopt=adopt)
    again.start("m/s", params={"model.name": "m", "seed": "1"}, tags={"status": "killed"})
    child = again.child("a", {"task": "a"}, {})
    again.log_metrics({"acc": 0.5, "acc_stderr": 0.1}, run=child)
    again.end(run=child)
    fresh = again.child("c", {"task": "c"}, {})
    again.log_metrics({"acc": 1.0}, run=fresh)
    again.end(run=fresh)
    again.log_metrics({"a/acc": 0.5})
    again.end(status="KILLED")
    again.close()
    assert not again.failed and again.parent_id == ids["m/s"]

    after = {r.info.run_name: r for r in client.search_runs([live.experiment_id])}
    assert set(after) == {"m/s", "a", "b", "c"}  # b (cut short) kept, c created
    assert {n: after[n].info.run_id for n in ("m/s", "a", "b")} == ids
    assert [m.value for m in client.get_metric_history(ids["a"], "acc")] == [0.5]  # not twice
    assert after["a"].data.metrics["acc_stderr"] == 0.1  # what it lacked, added
    assert after["m/s"].data.params == {"model.name": "m", "seed": "1"}
    assert after["m/s"].data.tags["status"] == "killed"
    assert after["m/s"].data.metrics["a/acc"] == 0.5
    assert after["c"].data.tags["mlflow.parentRunId"] == ids["m/s"]
