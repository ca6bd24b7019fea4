"""``log_samples=true``: lm-eval's per-sample records on each child run, as JSONL in gzip."""

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
        assert logged == [path]
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
