"""A planner that checks itself on every run (issue 37), with real vLLM and a real MLflow server.

One ``strategy=vllm`` run of the bundled model on this CPU, its plan made deliberately wrong: a
``sitecustomize`` put on the run's ``PYTHONPATH`` (this test's only, never harness's) inflates the
planner's KV bytes per token by a quarter in every process of the run, as a planner that is off
for a vLLM release would. vLLM's own KV cache (blocks x block size, read from the engine) then
holds 25% more tokens than the plan says: the run records both figures in summary.json and in
its parent run's MLflow metrics, and warns on the console, in harness.log and in events.jsonl.
The same figures of an honest plan agree (``tests/engines/test_vllm.py``, the TP=2 run).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from tests.conftest import offline_env
from tests.tracking.test_tracking_server import serve_mlflow

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

SKEW = 1.25
PLANT = f'''"""Test-only (tests/engines/test_memory_check_vllm.py): KV bytes per token x {SKEW}."""
import harness.planning.memory as plan

_real = plan.kv_bytes_per_token


def _skewed(model, strategy):
    return int(_real(model, strategy) * {SKEW})


plan.kv_bytes_per_token = _skewed
'''


@pytest.fixture(scope="module")
def mlflow_url(tmp_path_factory):
    yield from serve_mlflow(tmp_path_factory.mktemp("mlflow_server"))


@pytest.fixture(scope="module")
def wrong_plan_run(tmp_path_factory, mlflow_url) -> dict:
    root = tmp_path_factory.mktemp("wrong_plan")
    plant = root / "plant"
    plant.mkdir()
    (plant / "sitecustomize.py").write_text(PLANT)
    env = offline_env(root)
    env["PYTHONPATH"] = f"{plant}:{env.get('PYTHONPATH', '')}"
    run_dir = root / "run"
    proc = subprocess.run(
        [
            sys.executable, "-m", "harness", "strategy=vllm", "dataset=[arith_mc]",
            "dataset.arith_mc.limit=8", "tracking=server", f"tracking.uri={mlflow_url}",
            f"outputs_root={root / 'outputs'}", f"output_dir={run_dir}",
        ],
        cwd=root, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return {
        "console": proc.stdout + proc.stderr,
        "run_dir": run_dir,
        "summary": json.loads((run_dir / "summary.json").read_text()),
    }


def test_vllms_own_kv_figure_is_recorded_beside_the_plans(wrong_plan_run, mlflow_url):
    from mlflow.tracking import MlflowClient

    summary = wrong_plan_run["summary"]
    report = summary["engine"]["startup_memory"]
    # vLLM's own figure, read from its engine: the blocks it made, of its block size
    assert report["kv_tokens"] == report["kv_blocks"] * report["block_size"] > 0
    assert report["ranks"] == 1 and report["per_rank"][0]["kv_cache"] > 0
    row = summary["memory_check"]["figures"]["kv_tokens"]
    assert row["measured"] == report["kv_tokens"]
    per_token = summary["plan"]["memory"]["kv_bytes_per_token"]  # the planted (wrong) figure
    assert row["planned"] == int(report["kv_cache_asked_gib"] * 1024**3 // per_token)
    assert row["diff_pct"] == pytest.approx((SKEW - 1) * 100, abs=1.0)

    client = MlflowClient(tracking_uri=mlflow_url)
    runs = client.search_runs([client.get_experiment_by_name("harness").experiment_id])
    [parent] = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    metrics = parent.data.metrics
    assert metrics["memory/kv_tokens_planned"] == row["planned"]
    assert metrics["memory/kv_tokens_measured"] == row["measured"]
    assert metrics["memory/kv_tokens_diff_pct"] == row["diff_pct"]
    assert metrics["memory/kv_cache_gib_measured"] == report["kv_cache_gib"] == 0.25
    # the CPU build's weights live in oneDNN handles: planned, not reported, never a 0
    assert "memory/weights_gib_planned" in metrics
    assert "memory/weights_gib_measured" not in metrics


def test_a_wrong_plan_is_warned_about_on_the_console_in_the_log_and_the_events(wrong_plan_run):
    run_dir = wrong_plan_run["run_dir"]
    check = wrong_plan_run["summary"]["memory_check"]
    [text] = check["warnings"]  # only the tokens are off: the pool's bytes are the plan's ask
    assert check["figures"]["kv_cache_gib"]["status"] == "ok"
    assert "KV cache tokens: plan said" in text and ("(+25.0%)" in text or "(+24.9%)" in text)
    assert "the planner may be off for this vLLM release" in text
    assert text in wrong_plan_run["console"]
    assert text in (run_dir / "harness.log").read_text()
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    [checked] = [e for e in events if e["event"] == "memory_checked"]
    assert checked["check"]["warnings"] == [text]
    loaded = [e["event"] for e in events].index("loaded")
    assert [e["event"] for e in events][loaded + 1] == "memory_checked"  # seen at start-up


def test_replay_of_a_killed_run_carries_the_check_from_its_events(wrong_plan_run, tmp_path):
    """A run killed before its summary.json: replay logs the check the ``memory_checked`` event
    holds, as the live run logged it."""
    from mlflow.tracking import MlflowClient

    killed = tmp_path / "killed"
    shutil.copytree(wrong_plan_run["run_dir"], killed)
    (killed / "summary.json").unlink()
    events = (killed / "events.jsonl").read_text().splitlines()
    kept = [line for line in events if json.loads(line)["event"] != "run_done"]
    (killed / "events.jsonl").write_text("\n".join(kept) + "\n")
    uri = f"sqlite:///{tmp_path / 'replay.db'}"
    proc = subprocess.run(
        [sys.executable, "-m", "harness.replay", str(killed), "--tracking-uri", uri],
        cwd=tmp_path, env=offline_env(tmp_path), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("harness").experiment_id])
    [parent] = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    row = wrong_plan_run["summary"]["memory_check"]["figures"]["kv_tokens"]
    assert parent.data.metrics["memory/kv_tokens_measured"] == row["measured"]
    assert parent.data.metrics["memory/kv_tokens_diff_pct"] == row["diff_pct"]
