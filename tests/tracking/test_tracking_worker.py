"""MLflow in its own process: what the live run's tracker sends arrives whole, the worker's
warnings reach the harness's log, a harness killed outright leaves its runs KILLED and no
process behind, and the harness process itself never imports MLflow."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from harness.config.schema import TrackingBackend, TrackingConfig
from harness.tracking import Tracker
from tests.conftest import offline_env, run_harness, run_module

pytestmark = pytest.mark.slow


def client_for(db: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{db}")


def runs_of(db: Path, experiment: str = "worker") -> list:
    client = client_for(db)
    found = client.get_experiment_by_name(experiment)
    return [] if found is None else client.search_runs([found.experiment_id], max_results=100)


def config(uri: str, experiment: str = "worker") -> TrackingConfig:
    return TrackingConfig(backend=TrackingBackend.mlflow, uri=uri, experiment=experiment)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is gone for our purpose: it no longer runs
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_records_sent_through_the_worker_arrive_whole(tmp_path):
    db = tmp_path / "mlflow.db"
    tracker = Tracker(config(f"sqlite:///{db}"), uid="u" * 32, own_process=True)
    tracker.start("m/s", params={"model.name": "m", "token": "x"}, tags={"model": "m"})
    child = tracker.child("arith", {"task": "arith"}, {})
    points = [(f"gpu0/mem_{i % 3}", float(i), 1_700_000_000_000 + i, i) for i in range(2500)]
    tracker.log_series(points)  # past one log_batch's 1000 records: split, none lost
    tracker.log_metrics({"acc": 0.75}, run=child)
    note = tmp_path / "note.txt"
    note.write_text("hello")
    tracker.log_artifact(note, run=child)
    tracker.end(run=child)
    tracker.end()
    tracker.close()
    assert not tracker.failed and tracker.enabled
    described = tracker.describe()
    runs = {r.info.run_name: r for r in runs_of(db)}
    assert set(runs) == {"m/s", "arith"}
    parent, kid = runs["m/s"], runs["arith"]
    assert described["run_id"] == parent.info.run_id
    assert described["experiment_id"] == parent.info.experiment_id
    assert kid.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert parent.data.tags["harness.run_uid"] == "u" * 32
    assert kid.data.metrics["acc"] == 0.75
    assert parent.info.status == kid.info.status == "FINISHED"
    client = client_for(db)
    history = client.get_metric_history(parent.info.run_id, "gpu0/mem_1")
    assert sorted(m.step for m in history) == list(range(1, 2500, 3))
    assert [a.path for a in client.list_artifacts(kid.info.run_id)] == ["note.txt"]


def test_worker_warnings_reach_the_harness_log_masked(tmp_path, caplog, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    tracker = Tracker(config("http://user:s3cretpass@127.0.0.1:9"), own_process=True)
    with caplog.at_level(logging.WARNING):
        tracker.start("m/s", params={}, tags={})
        tracker.log_metrics({"x": 1.0})
        tracker.close()
    assert tracker.failed and not tracker.enabled
    assert tracker.describe()["run_id"] is None
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("MLflow start failed at tracking.uri=" in w for w in warnings), warnings
    assert any("harness.replay" in w for w in warnings)
    assert not any("s3cretpass" in w for w in warnings)


KILLED_HARNESS = textwrap.dedent(
    """
    import os, signal, sys, time
    from harness.config.schema import TrackingBackend, TrackingConfig
    from harness.tracking import Tracker

    cfg = TrackingConfig(backend=TrackingBackend.mlflow, uri=sys.argv[1], experiment="worker")
    tracker = Tracker(cfg, own_process=True)
    tracker.start("m/s", params={}, tags={})
    child = tracker.child("arith", {}, {})
    tracker.log_metrics({"acc": 0.5}, run=child)
    tracker.describe()  # the parent is open
    print("ready", flush=True)
    time.sleep(3)  # the child run and its metric go out meanwhile
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def test_a_harness_killed_outright_leaves_its_runs_killed_and_no_worker(tmp_path):
    db = tmp_path / "mlflow.db"
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_HARNESS, f"sqlite:///{db}"],
        cwd=tmp_path,
        env=offline_env(tmp_path),
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    proc.stdout.readline()
    workers = worker_pids(proc.pid)
    assert len(workers) == 1, workers  # the worker runs beside the harness
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    deadline = time.monotonic() + 60
    while alive(workers[0]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not alive(workers[0]), "the worker outlived the harness"
    runs = {r.info.run_name: r for r in runs_of(db)}
    assert {n: r.info.status for n, r in runs.items()} == {"m/s": "KILLED", "arith": "KILLED"}
    assert runs["arith"].data.metrics == {"acc": 0.5}
    assert "harness.logged" not in runs["m/s"].data.tags  # partial: a replay replaces it


def worker_pids(parent: int) -> list[int]:
    """The tracking workers among ``parent``'s children."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        ppid = int(stat.split(")")[-1].split()[1])
        if ppid == parent and b"harness.tracking.worker" in cmdline:
            found.append(int(entry.name))
    return found


WATCHED_HARNESS = (
    "import atexit, runpy, sys\n"
    "atexit.register(lambda: print('mlflow imported:', 'mlflow' in sys.modules))\n"
    "sys.argv = ['harness', *sys.argv[1:]]\n"
    "runpy.run_module('harness', run_name='__main__')\n"
)


def test_the_live_run_logs_whole_without_importing_mlflow_and_a_moved_dir_is_known(tmp_path):
    out, run_dir = tmp_path / "out", tmp_path / "run"
    args = [
        "dataset=[arith_mc,reverse_gen]", "dataset.arith_mc.limit=20",
        "dataset.reverse_gen.limit=10", f"outputs_root={out}", f"output_dir={run_dir}",
        "tracking=local", f"tracking.uri=sqlite:///{out / 'mlflow.db'}",
    ]  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-c", WATCHED_HARNESS, *args],
        cwd=tmp_path,
        env=offline_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "mlflow imported: False" in proc.stdout, proc.stdout[-2000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    runs = runs_of(out / "mlflow.db", "harness")
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1 and len(runs) == 3
    parent = parents[0]
    assert parent.info.run_id == summary["tracking"]["run_id"]
    assert parent.data.tags["harness.logged"] == "complete"
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["total_time_s"] == summary["total_time_s"]
    first = json.loads((run_dir / "events.jsonl").read_text().splitlines()[0])
    assert parent.data.tags["harness.run_uid"] == first["run_uid"] == summary["tracking"]["run_uid"]

    moved = tmp_path / "elsewhere" / "run"
    moved.parent.mkdir()
    shutil.move(run_dir, moved)
    replay = run_module("harness.replay", str(moved), cwd=tmp_path, timeout=300)
    assert replay.returncode == 0, replay.stderr[-2000:]
    assert replay.stdout.startswith(f"skipped {moved}"), replay.stdout
    assert len(runs_of(out / "mlflow.db", "harness")) == 3


def test_a_resumed_run_keeps_its_run_uid(tmp_path):
    run_dir = tmp_path / "run"
    args = ["dataset=[arith_mc]", "dataset.arith_mc.limit=5", "tracking=none"]
    for _ in range(2):
        proc = run_harness([*args, f"output_dir={run_dir}", f"outputs_root={tmp_path}"], tmp_path)
        assert proc.returncode == 0, proc.stderr[-2000:]
    planned = [
        json.loads(line)
        for line in (run_dir / "events.jsonl").read_text().splitlines()
        if '"planned"' in line
    ]
    assert len(planned) == 2 and planned[0]["run_uid"] == planned[1]["run_uid"]
