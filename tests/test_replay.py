"""The tracking server dies mid-run; the run still finishes; replay puts it in MLflow, once.

A real `mlflow server` on 127.0.0.1 is stopped as soon as the run's events.jsonl says the first
dataset is done and the server holds its child run, and started again on the same port and store
once the run has ended. The run (the bundled model on three bundled datasets, on fake GPUs so
telemetry is part of it) must exit 0 with every result in its run directory and a warning naming
the replay command; replay must leave exactly one parent with every child, metrics equal to the
run directory's, the telemetry and the artifacts; replaying again must change nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import assert_mlflow_matches_results, offline_env, run_harness, run_module
from tests.tracking.test_telemetry_tracking import FAKE_NVML, gpu_script
from tests.tracking.test_tracking_server import free_port, serve_mlflow

pytestmark = pytest.mark.slow

TASKS = ["arith_mc", "reverse_gen", "compare_mc"]
LIMITS = [
    "dataset.arith_mc.limit=20",
    "dataset.reverse_gen.limit=10",
    "dataset.compare_mc.limit=20",
]


def runs_of(url: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=url)
    experiment = client.get_experiment_by_name("harness")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return client, parents, children


def wait_for_event(path: Path, event: str, proc: subprocess.Popen, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.is_file() and any(
            json.loads(line)["event"] == event for line in path.read_text().splitlines() if line
        ):
            return
        assert proc.poll() is None, f"the run ended before {event}: {proc.communicate()}"
        time.sleep(0.1)
    raise AssertionError(f"no {event} in {path} within {timeout}s")


def wait_for_child(url: str, name: str, proc: subprocess.Popen, timeout: float = 300) -> None:
    """Until the server holds the child run ``name`` (the first dataset logged)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=url)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        experiment = client.get_experiment_by_name("harness")
        if experiment is not None and client.search_runs(
            [experiment.experiment_id], f"attributes.run_name = '{name}'"
        ):
            return
        assert proc.poll() is None, f"the run ended before {name} was logged: {proc.communicate()}"
        time.sleep(0.1)
    raise AssertionError(f"no child run {name} at {url} within {timeout}s")


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory):
    """A run whose server was stopped after its first dataset; the server up again after it."""
    store = tmp_path_factory.mktemp("replay_store")
    tmp = tmp_path_factory.mktemp("replay_run")
    (tmp / "nvml.json").write_text(json.dumps(gpu_script()))
    port = free_port()
    first = serve_mlflow(store, port)
    url = next(first)
    env = offline_env(tmp)
    env["PYTHONPATH"] = os.pathsep.join([str(FAKE_NVML), env.get("PYTHONPATH", "")])
    env["FAKE_NVML_SCRIPT"] = str(tmp / "nvml.json")
    run_dir = tmp / "run"
    args = [f"dataset=[{','.join(TASKS)}]", *LIMITS, "strategy.device=cpu"]
    args += ["telemetry.interval_s=0.2", "tracking=server", f"tracking.uri={url}"]
    args += ["log_samples=true"]  # the per-sample tables, completed in place too
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness", *args, f"output_dir={run_dir}"],
        cwd=tmp,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for_event(run_dir / "events.jsonl", "dataset_done", proc)
    wait_for_child(url, TASKS[0], proc)  # MLflow's worker writes beside the run, not in step
    next(first, None)  # the server stops (terminate, then wait)
    out, err = proc.communicate(timeout=600)
    second = serve_mlflow(store, port)  # the same port and store: the run's own target
    assert next(second) == url
    yield {
        "returncode": proc.returncode,
        "output": out + err,
        "run": run_dir,
        "tmp": tmp,
        "url": url,
    }
    next(second, None)


def test_run_finishes_without_its_server(interrupted):
    out = interrupted["output"]
    assert interrupted["returncode"] == 0, out[-3000:]
    assert "Traceback" not in out
    assert "tracking is off for the rest of this run" in out
    assert f"python -m harness.replay {interrupted['run']}" in out
    summary = json.loads((interrupted["run"] / "summary.json").read_text())
    assert [summary["datasets"][t]["status"] for t in TASKS] == ["ok"] * 3
    for task in TASKS:
        assert (interrupted["run"] / "results" / f"{task}.json").is_file()
    _, parents, _ = runs_of(interrupted["url"])
    assert len(parents) == 1 and "harness.logged" not in parents[0].data.tags  # partial


def test_replay_logs_the_run_once(interrupted):
    _, (live,), live_children = runs_of(interrupted["url"])
    proc = run_module("harness.replay", str(interrupted["run"]), cwd=interrupted["tmp"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith(f"replayed {interrupted['run']}: logged as run ")
    assert f"completed its partial log (parent {live.info.run_id}" in proc.stdout
    client, parents, children = runs_of(interrupted["url"])
    assert_mlflow_matches_results(client, interrupted["run"], TASKS)
    (parent,) = parents
    assert parent.info.run_id == live.info.run_id  # the live runs completed, not rewritten
    assert {c.info.run_id for c in live_children} <= {c.info.run_id for c in children}
    assert parent.data.tags["harness.logged"] == "complete"
    uid = parent.data.tags["harness.run_uid"]
    assert {c.data.tags["harness.run_uid"] for c in children} == {uid}
    # telemetry, as the live run logs it: per-phase figures, the series, the files
    described = json.loads((interrupted["run"] / "telemetry.json").read_text())
    phases = {p["name"]: p for p in described["phases"]}
    by_name = {c.info.run_name: c for c in children}
    for task in TASKS:
        metrics = by_name[task].data.metrics
        assert metrics["telemetry/energy_j"] == pytest.approx(phases[task]["energy_j"])
        samples = [a.path for a in client.list_artifacts(by_name[task].info.run_id)]
        assert f"{task}.json" in samples
        assert_one_table_per_sample(client, interrupted["run"], by_name[task].info.run_id, task)
    logged = json.loads(parent.data.tags["mlflow.loggedArtifacts"])
    assert sorted(t["path"] for t in logged) == [f"samples/{t}.table.json" for t in sorted(TASKS)]
    assert parent.data.metrics["load/telemetry/duration_s"] == pytest.approx(
        phases["load"]["duration_s"]
    )
    rows = (interrupted["run"] / "telemetry.csv").read_text().splitlines()[1:]
    gpu0 = [r.split(",") for r in rows if r.split(",")[1] == "0"]
    history = client.get_metric_history(parent.info.run_id, "gpu0/memory_used_mib")
    assert [m.value for m in history] == [float(r[5]) for r in gpu0]
    files = {a.path for a in client.list_artifacts(parent.info.run_id, "telemetry")}
    assert files == {f"telemetry/telemetry.{ext}" for ext in ("json", "csv", "png")}
    top = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"config.yaml", "summary.json", "reproducibility.json"} <= top
    assert parent.data.tags["harness.git_commit"]  # the reproducibility record's tags


def assert_one_table_per_sample(client, run: Path, run_id: str, task: str) -> None:
    """The dataset's table holds one row per sample record, once: a table the live run logged
    before its server died is replaced by the replay's, never appended to."""
    import gzip

    local = client.download_artifacts(run_id, f"samples/{task}.table.json")
    table = json.loads(Path(local).read_text(encoding="utf-8"))
    lines = gzip.decompress((run / "samples" / f"{task}.jsonl.gz").read_bytes()).splitlines()
    doc_ids = [json.loads(line)["doc_id"] for line in lines]
    assert [row[table["columns"].index("doc_id")] for row in table["data"]] == doc_ids


def test_replaying_again_changes_nothing(interrupted):
    _, parents, children = runs_of(interrupted["url"])
    proc = run_module("harness.replay", str(interrupted["run"]), cwd=interrupted["tmp"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith(f"skipped {interrupted['run']}: already in MLflow whole")
    _, again, children_again = runs_of(interrupted["url"])
    assert [p.info.run_id for p in again] == [p.info.run_id for p in parents]
    assert len(children_again) == len(children) == len(TASKS)


def test_server_down_at_start_then_replayed(tmp_path):
    port = free_port()  # nothing listens there yet
    proc = run_harness(
        [
            "dataset=[arith_mc]",
            "dataset.arith_mc.limit=20",
            "tracking=server",
            f"tracking.uri=http://127.0.0.1:{port}",
            f"output_dir={tmp_path / 'run'}",
        ],
        tmp_path,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "MLflow start failed" in out and "python -m harness.replay" in out
    (tmp_path / "store").mkdir()
    server = serve_mlflow(tmp_path / "store", port)
    url = next(server)
    try:
        done = run_module(
            "harness.replay", str(tmp_path / "run"), str(tmp_path / "missing"), cwd=tmp_path
        )
        assert done.returncode == 1, done.stdout + done.stderr  # one of the two could not be
        assert f"replayed {tmp_path / 'run'}: logged as run " in done.stdout
        assert f"failed {tmp_path / 'missing'}: " in done.stdout
        assert f"not replayed: {tmp_path / 'missing'}" in done.stderr
        from mlflow.tracking import MlflowClient

        assert_mlflow_matches_results(
            MlflowClient(tracking_uri=url), tmp_path / "run", ["arith_mc"]
        )
    finally:
        next(server, None)
