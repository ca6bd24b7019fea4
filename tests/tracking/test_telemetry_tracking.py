"""A run on a node of fake GPUs, tracked by a real `mlflow server`, with secrets planted.

One run (scripted fake NVML in the subprocess, the model on the CPU) and every check read back:
per-phase telemetry on the child runs and ``load/...`` on the parent, the raw series, the CSV and
PNG artifacts, events.jsonl, and no planted secret anywhere in the run's files, its output or
the MLflow store.
"""

from __future__ import annotations

import json
import math
import os
import secrets
from itertools import pairwise
from pathlib import Path

import pytest

from harness.paths import PROJECT_ROOT
from tests.conftest import FAKE_NVML, run_harness
from tests.tracking.test_tracking_server import serve_mlflow

pytestmark = pytest.mark.slow

TASKS = ["arith_mc", "reverse_gen"]


def gpu_script(readings: int = 600) -> dict:
    """Two H100s: memory climbing, utilization waving; GPU 1 has no energy counter."""
    gpus = []
    for g in range(2):
        util = [round(50 + 45 * math.sin(i / 5 + g)) for i in range(readings)]
        power = [100 + 3 * u for u in util]
        energy = [sum(power[: i + 1]) * 0.2 for i in range(readings)]
        gpus.append(
            {
                "name": "NVIDIA H100 80GB HBM3",
                "total_mib": 81559,
                "used_mib": [min(2000 + 60 * (g + 1) * i, 40000) for i in range(readings)],
                "util": util,
                "power_w": power,
                "energy_j": energy if g == 0 else None,
            }
        )
    return {"gpus": gpus, "nvlink": [[0, 1]]}


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    """The run, its server's store folder, and the secrets planted for it."""
    store = tmp_path_factory.mktemp("mlflow_store")
    server = serve_mlflow(store)
    url = next(server)
    tmp = tmp_path_factory.mktemp("fake_gpu_run")
    (tmp / "nvml.json").write_text(json.dumps(gpu_script()))
    planted = {
        "HF_TOKEN": "hf_" + secrets.token_hex(17),
        "MY_SERVICE_API_KEY": secrets.token_urlsafe(24),
        "password": "pw-" + secrets.token_hex(8),
    }
    host = url.removeprefix("http://")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PYTHONPATH", os.pathsep.join([str(FAKE_NVML), os.environ.get("PYTHONPATH", "")]))
        mp.setenv("FAKE_NVML_SCRIPT", str(tmp / "nvml.json"))
        mp.setenv("HF_TOKEN", planted["HF_TOKEN"])
        mp.setenv("MY_SERVICE_API_KEY", planted["MY_SERVICE_API_KEY"])
        mp.setenv("SLURM_JOB_ID", "4242")  # as inside task 3 of a SLURM job array
        mp.setenv("SLURM_ARRAY_JOB_ID", "4239")
        mp.setenv("SLURM_ARRAY_TASK_ID", "3")
        proc = run_harness(
            [
                f"dataset=[{','.join(TASKS)}]",
                "dataset.arith_mc.limit=30",
                "dataset.reverse_gen.limit=30",
                "strategy.device=cpu",  # the GPUs are fake; the model runs on the CPU
                "telemetry.interval_s=0.2",
                "tracking=server",
                f"tracking.uri=http://alice:{planted['password']}@{host}",
                # a config that interpolates secrets from the environment
                "allowed_roots=[/opt/${oc.env:HF_TOKEN},/srv/${oc.env:MY_SERVICE_API_KEY}]",
                f"output_dir={tmp / 'run'}",
            ],
            tmp,
        )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    yield {"proc": proc, "run": tmp / "run", "tmp": tmp, "url": url, "store": store, **planted}
    next(server, None)


def parent_and_children(url: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=url)
    experiment = client.get_experiment_by_name("harness")
    runs = client.search_runs([experiment.experiment_id])
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = {r.info.run_name: r for r in runs if "mlflow.parentRunId" in r.data.tags}
    return client, parent, children


def test_phase_figures_on_child_and_parent_runs(tracked):
    _, parent, children = parent_and_children(tracked["url"])
    described = json.loads((tracked["run"] / "telemetry.json").read_text())
    phases = {p["name"]: p for p in described["phases"]}
    assert list(phases) == ["load", *TASKS]
    for task in TASKS:
        metrics, phase = children[task].data.metrics, phases[task]
        assert metrics["telemetry/duration_s"] == pytest.approx(phase["duration_s"])
        assert phase["energy_j"] > 0
        assert metrics["telemetry/energy_j"] == pytest.approx(phase["energy_j"])
        for gpu in phase["gpus"]:
            assert metrics[f"{gpu['gpu']}/peak_memory_gib"] == pytest.approx(gpu["peak_memory_gib"])
        assert [g["energy_from"] for g in phase["gpus"]] == ["counter", "power"]
        assert metrics["tokens_per_joule"] == pytest.approx(described["tokens_per_joule"][task])
        assert parent.data.metrics[f"{task}/tokens_per_joule"] == metrics["tokens_per_joule"]
    load = phases["load"]
    assert parent.data.metrics["load/telemetry/duration_s"] == pytest.approx(load["duration_s"])
    assert parent.data.metrics["load/gpu1/energy_j"] == pytest.approx(load["gpus"][1]["energy_j"])
    assert parent.data.tags["telemetry.topology"] == "0-1:NV"


def test_series_csv_and_plot_are_logged(tracked):
    client, parent, _ = parent_and_children(tracked["url"])
    rows = (tracked["run"] / "telemetry.csv").read_text().splitlines()[1:]
    gpu0 = [r.split(",") for r in rows if r.split(",")[1] == "0"]
    history = client.get_metric_history(parent.info.run_id, "gpu0/memory_used_mib")
    assert [m.step for m in history] == list(range(len(gpu0)))
    assert [m.value for m in history] == [float(r[5]) for r in gpu0]
    assert {r[4] for r in gpu0} == {"", "load", *TASKS}
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "telemetry")}
    assert artifacts == {f"telemetry/telemetry.{ext}" for ext in ("json", "csv", "png")}
    png = Path(client.download_artifacts(parent.info.run_id, "telemetry/telemetry.png"))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.read_bytes() == (tracked["run"] / "telemetry.png").read_bytes()


def test_events_are_recorded_in_order(tracked):
    lines = (tracked["run"] / "events.jsonl").read_text().splitlines()
    events = [json.loads(line) for line in lines]
    assert [e["event"] for e in events] == [
        "planned",
        "load_started",
        "loaded",
        *[e for task in TASKS for e in ("dataset_started", "dataset_done")],
        "run_done",
    ]
    assert [e["dataset"] for e in events if e["event"] == "dataset_done"] == TASKS
    assert all(a["t"] <= b["t"] for a, b in pairwise(events))
    assert events[-1]["status"] == "FINISHED" and events[2]["load_time_s"] > 0


def test_planted_secrets_are_nowhere(tracked):
    planted = [tracked[k] for k in ("HF_TOKEN", "MY_SERVICE_API_KEY", "password")]
    out = tracked["proc"].stdout + tracked["proc"].stderr
    files = [p for p in tracked["tmp"].rglob("*") if p.is_file() and p.name != "nvml.json"]
    files += [p for p in tracked["store"].rglob("*") if p.is_file()]
    assert any(p.name == "overrides.yaml" for p in files)  # Hydra's record of the command line
    assert any(p.name == "harness.log" for p in files) and any(p.suffix == ".db" for p in files)
    for secret in planted:
        assert secret not in out
        for path in files:
            assert secret.encode() not in path.read_bytes(), f"{secret!r} in {path}"
    _, parent, _ = parent_and_children(tracked["url"])
    host = tracked["url"].removeprefix("http://")
    assert parent.data.params["tracking.uri"] == f"http://***@{host}"
    assert parent.data.params["allowed_roots"] == "/opt/***,/srv/***"
    config = (tracked["run"] / "config.yaml").read_text()
    assert f"uri: http://***@{host}" in config


def test_reproducibility_record_on_the_parent_run(tracked):
    import subprocess
    from importlib.metadata import version

    client, parent, children = parent_and_children(tracked["url"])
    record = json.loads((tracked["run"] / "reproducibility.json").read_text())
    tags = parent.data.tags
    head = subprocess.run(
        ["git", "-C", str(PROJECT_ROOT), "rev-parse", "HEAD"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert tags["harness.git_commit"] == tags["mlflow.source.git.commit"] == head
    assert record["harness"]["git"]["commit"] == head
    assert tags["harness.version"] == record["harness"]["version"] == "0.1.0"
    assert (tags["slurm.job_id"], tags["slurm.array_job_id"], tags["slurm.array_task_id"]) == (
        "4242",
        "4239",
        "3",
    )
    for library in ("torch", "transformers", "lm_eval", "mlflow"):
        assert tags[f"version.{library}"] == record["libraries"][library] == version(library)
    assert tags["python"] == record["python"] and tags["host"] == record["host"]["name"]
    assert record["cuda"]["driver_cuda"] == "13.0"  # the fake NVML's driver
    engine = record["engine"]
    assert (engine["kind"], engine["device"], engine["dtype"], engine["batch_size"]) == (
        "hf",
        "cpu",
        "float32",
        32,
    )
    assert engine["tensor_parallel_size"] == engine["pipeline_parallel_size"] == 1
    assert record["seeds"] == {
        "seed": None,
        "random_seed": 0,
        "numpy_random_seed": 1234,
        "torch_random_seed": 1234,
        "fewshot_random_seed": 1234,
    }
    for task in TASKS:
        fingerprint = children[task].data.params["fingerprint"]
        assert record["datasets"][task]["fingerprint"] == fingerprint
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert "reproducibility.json" in artifacts
