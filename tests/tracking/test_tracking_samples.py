"""``log_samples=true``: lm-eval's per-sample records on each child run, as JSONL in gzip, and
their table (``samples/<dataset>.table.json``) on the child and the parent, which MLflow's own
reader (``load_table``) finds; replay logs the same tables."""

from __future__ import annotations

import gzip
import json
import secrets
from pathlib import Path

import pytest

from harness.evaluation.loop import write_result
from harness.record.rundir import RunDirectory
from tests.conftest import run_harness

LIMITS = {"arith_mc": 12, "reverse_gen": 7}


@pytest.mark.slow
def test_samples_on_each_child_run_and_in_the_run_dir(tmp_path):
    from mlflow.tracking import MlflowClient

    proc = run_harness(
        [
            f"dataset=[{','.join(LIMITS)}]",
            *(f"dataset.{name}.limit={n}" for name, n in LIMITS.items()),
            "log_samples=true",
            f"outputs_root={tmp_path / 'outputs'}",
            f"output_dir={tmp_path / 'run'}",
        ],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("harness")
    children = {
        r.info.run_name: r
        for r in client.search_runs([experiment.experiment_id])
        if "mlflow.parentRunId" in r.data.tags
    }
    for name, limit in LIMITS.items():
        path = f"samples/{name}.jsonl.gz"
        logged = [a.path for a in client.list_artifacts(children[name].info.run_id, "samples")]
        assert logged == [path, f"samples/{name}.table.json"]
        local = client.download_artifacts(children[name].info.run_id, path, str(tmp_path))
        data = Path(local).read_bytes()
        lines = gzip.decompress(data).decode().splitlines()
        assert len(lines) == limit
        records = [json.loads(line) for line in lines]
        assert [r["doc_id"] for r in records] == list(range(limit))
        assert {r["task"] for r in records} == {name}
        kept = (tmp_path / "run" / path).read_bytes()
        assert kept == data  # the run directory holds the same file
        assert not (tmp_path / "run" / "results" / f"{name}.samples.json").exists()
        assert_tables_match(client, experiment.experiment_id, name, records)
    assert_replay_logs_the_same_tables(client, tmp_path, list(LIMITS))


def table_of(client, run_id: str, dataset: str, dst: Path) -> dict:
    local = client.download_artifacts(run_id, f"samples/{dataset}.table.json", str(dst))
    return json.loads(Path(local).read_text(encoding="utf-8"))


def assert_tables_match(client, experiment_id: str, dataset: str, records: list[dict]) -> None:
    """The dataset's table, on its child run and on the parent, found by MLflow's own
    ``load_table`` (through the ``mlflow.loggedArtifacts`` tag): a row per sample record, each
    with its document and its scores."""
    import mlflow

    before = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(client._tracking_client.tracking_uri)  # load_table searches there
    try:
        table = client.load_table(
            experiment_id, f"samples/{dataset}.table.json", extra_columns=["run_id"]
        )
    finally:
        mlflow.set_tracking_uri(before)
    assert table["run_id"].nunique() == 2  # the child and the parent
    for _, rows in table.groupby("run_id"):
        assert rows["doc_id"].tolist() == [r["doc_id"] for r in records]
        assert rows["sample"].tolist() == [f"{dataset}/{r['doc_id']}" for r in records]
        for metric in records[0]["metrics"]:
            assert rows[metric].tolist() == [float(r[metric]) for r in records]


def assert_replay_logs_the_same_tables(client, tmp_path: Path, datasets: list[str]) -> None:
    """Replay of the run directory into another store logs each table byte for byte as the
    live run did (the same code builds it from the same file)."""
    from mlflow.tracking import MlflowClient

    from harness.replay import replay_run

    uri = f"sqlite:///{tmp_path / 'replayed.db'}"
    assert replay_run(tmp_path / "run", uri).status == "replayed"
    again = MlflowClient(tracking_uri=uri)

    def tables(of, where: Path) -> dict:
        experiment = of.get_experiment_by_name("harness")
        runs = of.search_runs([experiment.experiment_id])
        child = {r.info.run_name: r.info.run_id for r in runs}
        return {d: table_of(of, child[d], d, where / d) for d in datasets}

    assert tables(again, tmp_path / "replayed") == tables(client, tmp_path / "live")


def test_samples_are_masked(tmp_path):
    token = "hf_" + secrets.token_hex(17)
    result = {
        "results": {"t": {"acc,none": 1.0}},
        "samples": {"t": [{"doc_id": 0, "doc": {"q": f"say {token}"}}, {"doc_id": 1}]},
    }
    _, samples = write_result(RunDirectory(tmp_path), "t", result)
    assert samples == str(tmp_path / "samples" / "t.jsonl.gz")
    text = gzip.decompress((tmp_path / "samples" / "t.jsonl.gz").read_bytes()).decode()
    assert token not in text and len(text.splitlines()) == 2
    assert json.loads(text.splitlines()[0])["doc"]["q"] == "say ***"
    assert "samples" not in json.loads((tmp_path / "results" / "t.json").read_text())


@pytest.mark.slow
def test_an_unreadable_samples_file_costs_its_table_only(tmp_path, caplog):
    """A samples file the writer cannot read: a warning naming it, no table for that dataset, and
    tracking goes on (the next dataset's table is logged, on its child and on the parent)."""
    import logging

    from mlflow.tracking import MlflowClient

    from harness.config.schema import TrackingBackend, TrackingConfig
    from harness.tracking import Tracker

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = Tracker(TrackingConfig(backend=TrackingBackend.mlflow, uri=uri, experiment="t"))
    broken = tmp_path / "broken.jsonl.gz"
    broken.write_bytes(b"not gzip")
    good = Path(__file__).parents[1] / "fixtures" / "run_dir_fd5f124" / "samples"
    with caplog.at_level(logging.WARNING):
        tracker.start("m/s", params={}, tags={})
        for name, samples in (("broken", broken), ("arith_mc", good / "arith_mc.jsonl.gz")):
            child = tracker.child(name, params={}, tags={})
            tracker.log_samples_table(samples, name, run=child)
            tracker.end(run=child)
        tracker.end()
        tracker.close()
    assert not tracker.failed
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(w.startswith("per-sample table of broken not logged") for w in warnings), warnings
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("t").experiment_id])
    by_name = {r.info.run_name: r for r in runs}
    assert client.list_artifacts(by_name["broken"].info.run_id) == []
    assert "mlflow.loggedArtifacts" not in by_name["broken"].data.tags
    expected = json.dumps([{"path": "samples/arith_mc.table.json", "type": "table"}])
    for name in ("arith_mc", "m/s"):
        assert by_name[name].data.tags["mlflow.loggedArtifacts"] == expected
        listed = [a.path for a in client.list_artifacts(by_name[name].info.run_id, "samples")]
        assert listed == ["samples/arith_mc.table.json"]
