"""summary.json as ``RunSummary``: the shape every commit wrote, read back whole, written the same.

``tests/fixtures/run_dir_fd5f124`` is a run directory written by commit fd5f124 (before the
summary was one type): ``python -m harness`` on three datasets (arith_mc, reverse_gen, and boom,
which fails), ``log_samples=true``, fake GPUs for telemetry (its plot left out), tracking off.
Its summary must read back key for key, its run directory replay into MLflow, and a sweep's
outcome table count it.
"""

from __future__ import annotations

import json
import shutil
from typing import Any

import pytest

from harness.record.events import read_events
from harness.record.outcome import DatasetOutcome
from harness.record.rundir import RunDirectory
from harness.record.summary import RunSummary, killed_summary
from tests.conftest import FIXTURES

BEFORE = FIXTURES / "run_dir_fd5f124"
"""A run directory written before this step (commit fd5f124)."""


GAINED = {"requests_retried": 0, "group_subtasks": {}, "subtasks": {}}
"""Fields a dataset's outcome gained after fd5f124, with the value an older summary reads as."""
GAINED_TOP = {"memory_check": {}}
"""Keys the summary itself gained after fd5f124 (issue 37), with the value an older one reads as."""


def written() -> dict[str, Any]:
    return json.loads((BEFORE / "summary.json").read_text())


def without_gained(summary: dict[str, Any]) -> dict[str, Any]:
    """A summary as fd5f124 wrote it: each gained outcome field checked for its default, then
    left out."""
    for entry in summary["datasets"].values():
        for key, default in GAINED.items():
            assert entry.pop(key) == default
    for key, default in GAINED_TOP.items():
        assert summary.pop(key, default) == default
    return summary


def shape(value: Any) -> Any:
    """The value's shape: key names and value types, nested (lists by their first item)."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return type(value).__name__


def test_a_summary_written_before_reads_back_key_for_key():
    raw = written()
    summary = RunDirectory(BEFORE).read_summary()
    assert summary is not None
    assert json.dumps(without_gained(summary.to_dict())) == json.dumps(raw)  # keys, order, values
    assert summary.failed == ["boom"] and summary.resumed == []
    assert summary.status == "FAILED"
    assert summary.datasets["boom"].error_type == "RuntimeError"


def test_the_finished_run_writes_the_same_shape(compose_cfg, tmp_path):
    """``runner.run_summary`` (what ``finish_run`` writes) against the earlier commit's file."""
    from harness.config.schema import to_run_config
    from harness.planning.preflight import checked_plan
    from harness.runner import run_summary

    class Opened:  # what run_summary reads of an open run
        run_dir = RunDirectory(tmp_path)

        class tracker:  # stands in for an instance
            @staticmethod
            def describe() -> dict[str, Any]:
                return written()["tracking"]

    raw = written()
    plan = checked_plan(to_run_config(compose_cfg("dataset=[arith_mc]")))
    outcomes = [DatasetOutcome.from_dict(d) for d in raw["datasets"].values()]
    facts, telemetry = raw["engine"], raw["telemetry"]
    made = run_summary(Opened(), plan, outcomes, (1.5, 0.0), facts, telemetry)  # type: ignore[arg-type]
    RunDirectory(tmp_path).write_summary(made)
    new = without_gained(json.loads((tmp_path / "summary.json").read_text()))
    assert list(new) == list(raw)
    mine = {k: shape(v) for k, v in new.items() if k not in ("plan", "resources")}
    theirs = {k: shape(v) for k, v in raw.items() if k not in ("plan", "resources")}
    assert mine == theirs
    assert set(raw["plan"]) <= set(new["plan"])  # the plan may only gain facts
    assert set(new["resources"]) == set(raw["resources"])


def test_a_killed_run_is_told_from_its_events():
    events = read_events(BEFORE / "events.jsonl")
    plan = json.loads((BEFORE / "plan.json").read_text())
    summary = killed_summary(events, plan)
    assert summary.killed and summary.status == "KILLED"
    assert (summary.model, summary.strategy) == ("tiny_char", "single")
    assert summary.failed == ["boom"]
    raw = written()
    datasets = {n: d.to_dict() for n, d in summary.datasets.items()}
    assert without_gained({"datasets": datasets})["datasets"] == raw["datasets"]
    assert summary.load_time_s == raw["load_time_s"]
    assert "status" not in summary.to_dict()  # summary.json never had one


def test_a_summary_older_still_reads():
    """Commits before 2025's resources and times wrote neither, and ``telemetry: null``."""
    raw = written()
    for key in ("started_at", "ended_at", "resources"):
        del raw[key]
    raw["telemetry"] = None
    for entry in raw["datasets"].values():  # fields an outcome gained later
        for key in ("requests_journaled", "journal_sources", "evaluation", "samples_file"):
            del entry[key]
        entry["gone"] = "a field an outcome no longer has"
    summary = RunSummary.from_dict(raw)
    assert summary.started_at is None and summary.ended_at is None
    assert summary.telemetry == {} and summary.resources == {}
    assert summary.datasets["arith_mc"].requests_journaled == 0
    assert summary.failed == ["boom"]


def test_the_sweep_outcome_counts_a_run_directory(tmp_path):
    from harness.sweep.outcome import dataset_counts, failed_datasets

    assert dataset_counts(BEFORE) == (2, 1)
    assert failed_datasets(BEFORE) == ["boom (RuntimeError: boom: this metric always fails)"]
    killed = tmp_path / "killed"
    shutil.copytree(BEFORE, killed)
    (killed / "summary.json").unlink()
    assert dataset_counts(killed) == (2, 1)  # from results/: two results, one error
    assert failed_datasets(killed) == []
    assert dataset_counts(tmp_path / "none") == (None, None)


def mlflow_runs(uri: str) -> tuple[Any, list[Any], list[Any]]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("harness")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    return client, parents, [r for r in runs if r not in parents]


@pytest.mark.slow
@pytest.mark.parametrize("killed", [False, True], ids=["finished", "killed"])
def test_a_run_directory_written_before_replays(tmp_path, killed):
    """Replay of the earlier commit's run directory, moved (its files are found where they
    are now), finished or killed before its summary."""
    from harness.replay import replay_run

    root = tmp_path / "moved"
    shutil.copytree(BEFORE, root)
    if killed:
        (root / "summary.json").unlink()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    done = replay_run(root, uri)
    assert done.status == "replayed", done.message
    client, (parent,), children = mlflow_runs(uri)
    assert parent.info.status == ("KILLED" if killed else "FAILED")
    assert parent.data.tags["status"] == ("killed" if killed else "failed")
    assert parent.data.tags["harness.logged"] == "complete"
    assert sorted(c.info.run_name for c in children) == ["arith_mc", "boom", "reverse_gen"]
    by_name = {c.info.run_name: c for c in children}
    assert by_name["boom"].info.status == "FAILED"
    assert by_name["arith_mc"].data.metrics["acc"] == 1.0
    samples = {a.path for a in client.list_artifacts(by_name["arith_mc"].info.run_id, "samples")}
    assert samples == {"samples/arith_mc.jsonl.gz", "samples/arith_mc.table.json"}
    top = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"config.yaml", "plan.json", "reproducibility.json"} <= top
    assert ("summary.json" in top) is not killed
    telemetry = {a.path for a in client.list_artifacts(parent.info.run_id, "telemetry")}
    assert telemetry == {"telemetry/telemetry.json", "telemetry/telemetry.csv"}
    assert parent.data.metrics["datasets_failed"] == 1.0
    assert ("load_time_s" in parent.data.metrics) is not killed  # a killed one has no engine
    assert parent.data.tags["harness.version"]  # the reproducibility record's tags
