"""Nothing lost: a failing dataset, a killed process or a torn file never costs the rest."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from harness.paths import PROJECT_ROOT
from harness.record.store import ResultStore
from tests.conftest import BUNDLED_TASKS, FIXTURES, offline_env, run_harness


def metrics_of(run_dir: Path, task: str) -> dict:
    return json.loads((run_dir / "results" / f"{task}.json").read_text())["results"][task]


def only_run_dir(outputs: Path) -> Path:
    (run_dir,) = sorted((outputs / "runs").iterdir())[-1:]
    return run_dir


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("uninterrupted")
    proc = run_harness([f"outputs_root={tmp / 'out'}", "tracking=none"], tmp)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return only_run_dir(tmp / "out")


def run_until(args: list[str], cwd: Path, trigger: str) -> list[str]:
    """Start harness and SIGKILL it as soon as ``trigger`` appears on its stdout."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness", *args],
        cwd=cwd, env=offline_env(cwd), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        text=True,
    )  # fmt: skip
    seen = []
    assert proc.stdout is not None
    for line in proc.stdout:
        seen.append(line)
        if line.startswith(trigger):
            os.kill(proc.pid, signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "".join(seen[-20:])
    return seen


@pytest.mark.slow
@pytest.mark.parametrize(
    "trigger,stored_before_rerun",
    [
        ("[3/5] reverse_gen ...", 2),  # mid-dataset: two finished, the third half done
        ("[1/5] arith_mc ...", 0),  # during the first dataset
        ("[5/5] story_ppl ok", 5),  # all stored, summary not yet written
    ],
)
def test_sigkill_then_rerun_matches_uninterrupted(
    uninterrupted, tmp_path, trigger, stored_before_rerun
):
    out = tmp_path / "out"
    args = [f"outputs_root={out}", "tracking=local"]
    run_until(args, tmp_path, trigger)
    store = out / "store" / "tiny_char"
    stored = sorted(p.name.split("-")[0] for p in store.glob("*.json")) if store.exists() else []
    assert len(stored) == stored_before_rerun, stored
    assert not list(store.glob(".*.tmp")) if store.exists() else True

    rerun = run_harness(args, tmp_path)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert rerun.stdout.count("stored result reused") == stored_before_rerun
    summary = json.loads((only_run_dir(out) / "summary.json").read_text())
    assert sorted(summary["resumed"]) == stored
    for task in BUNDLED_TASKS:
        ours = metrics_of(only_run_dir(out), task)
        assert ours == metrics_of(uninterrupted, task), task


@pytest.mark.slow
def test_rerun_flag_forces_evaluation(tmp_path):
    args = [f"outputs_root={tmp_path / 'out'}", "tracking=none", "dataset=[arith_mc]"]
    assert run_harness(args, tmp_path).returncode == 0
    again = run_harness(args, tmp_path)
    assert "stored result reused" in again.stdout and "loading tiny_char" not in again.stdout
    forced = run_harness([*args, "rerun=true"], tmp_path)
    assert "stored result reused" not in forced.stdout and "loading tiny_char" in forced.stdout


@pytest.mark.slow
def test_a_failing_dataset_does_not_take_the_others_down(tmp_path):
    from mlflow.tracking import MlflowClient

    proc = run_harness(
        [
            f"hydra.searchpath=[file://{FIXTURES / 'conf'}]",
            f"allowed_roots=[{FIXTURES}]",
            "dataset=[arith_mc,boom,compare_mc]",
            f"outputs_root={tmp_path / 'out'}",
        ],
        tmp_path,
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "1 of 3 datasets failed: boom (RuntimeError: boom: this metric always fails)" in (
        proc.stderr
    )
    run_dir = only_run_dir(tmp_path / "out")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["failed"] == ["boom"]
    assert summary["datasets"]["boom"]["status"] == "failed"
    assert summary["datasets"]["boom"]["error_type"] == "RuntimeError"
    assert [summary["datasets"][d]["status"] for d in ("arith_mc", "compare_mc")] == ["ok", "ok"]
    error = json.loads((run_dir / "results" / "boom.error.json").read_text())
    assert "boom: this metric always fails" in error["error_message"]
    assert "Traceback" in error["traceback"]  # kept for the user, not printed
    assert "Traceback" not in proc.stderr
    assert metrics_of(run_dir, "compare_mc")["acc,none"] == 1.0

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'out' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("harness").experiment_id])
    by_name = {r.info.run_name.split()[0]: r for r in runs}  # the parent's: model/strategy
    assert by_name["boom"].data.tags["status"] == "failed"
    assert by_name["boom"].data.tags["error_type"] == "RuntimeError"
    assert by_name["boom"].info.status == "FAILED"
    assert by_name["arith_mc"].info.status == "FINISHED"
    assert by_name["tiny_char/single"].data.tags["boom/status"] == "failed"
    # The failure is not stored: a rerun retries only it, its answers from its request journal.
    store = tmp_path / "out" / "store" / "tiny_char"
    stored = [p.name.split("-")[0] for p in store.glob("*.json")]
    assert sorted(stored) == ["arith_mc", "compare_mc"]
    journals = [p.name.split("-")[0] for p in (store / "journal").iterdir()]
    assert journals == ["boom"]  # the stored datasets' journals are gone


def test_store_refuses_torn_or_edited_records(tmp_path):
    store = ResultStore(tmp_path)
    key = {"k": 1}
    result = {"results": {"t": {"acc,none": 0.5}}}
    path = store.save("t", "fp1", key, {"name": "t"}, result)
    assert store.load("t", "fp1")["result"] == result
    assert store.load("t", "fp2") is None  # another fingerprint is another evaluation

    text = path.read_text()
    path.write_text(text.replace("0.5", "0.9"))  # edited
    assert store.load("t", "fp1") is None
    path.write_text(text[: len(text) // 2])  # torn
    assert store.load("t", "fp1") is None
    path.write_text(text)
    assert store.load("t", "fp1") is not None


def test_fingerprint_changes_with_what_changes_numbers(compose_cfg, tmp_path):
    import shutil

    from harness.config.schema import to_run_config
    from harness.evaluation.fingerprint import dataset_key, fingerprint
    from harness.evaluation.tasks import prepare_datasets
    from harness.planning.auto import plan_run

    def fp(*overrides: str, run_edit=None) -> str:
        run = to_run_config(compose_cfg("dataset=[arith_mc]", *overrides))
        if run_edit:
            run = run_edit(run)
        ds = prepare_datasets(run)["arith_mc"]
        return fingerprint(dataset_key(run, plan_run(run), ds))

    base = fp()
    assert fp() == base
    assert fp("tracking=none", "strategy.gpu_memory_utilization=0.5") == base
    assert fp("dataset.arith_mc.num_fewshot=2") != base
    assert fp("dataset.arith_mc.limit=10") != base
    assert fp("strategy.batch_size=8") != base
    assert fp("seed=7") != base
    model_copy = tmp_path / "model"
    shutil.copytree(PROJECT_ROOT / "plugins/models/tiny_char", model_copy)
    same_weights = fp(f"model.pretrained={model_copy}")
    assert same_weights != base  # the path is part of the key
    (model_copy / "generation_config.json").write_text("{}\n")  # retrained or edited in place
    assert fp(f"model.pretrained={model_copy}") != same_weights

    folder = tmp_path / "tasks"
    shutil.copytree(PROJECT_ROOT / "plugins/tasks/synth", folder)
    overrides = (f"task_paths=[{folder}]", f"allowed_roots=[{tmp_path}]")
    v1 = fp(*overrides)
    assert fp(*overrides) == v1
    yaml_file = folder / "arith_mc.yaml"
    yaml_file.write_text(yaml_file.read_text().replace("version: 1.0", "version: 2.0"))
    assert fp(*overrides) != v1  # a new task version is a new evaluation


@pytest.mark.slow
def test_a_failing_sweep_job_does_not_end_the_sweep(tmp_path):
    proc = run_harness(
        [
            "-m",
            "dataset=[arith_mc]",
            "dataset.arith_mc.limit=10",
            "strategy.batch_size=0,8",
            "tracking=none",
            f"outputs_root={tmp_path / 'out'}",
        ],
        tmp_path,
    )
    text = proc.stdout + proc.stderr
    assert "strategy.batch_size=0: must be a number of at least 1" in text
    assert "Traceback" not in text
    assert proc.returncode == 1  # the sweep ran on, and says that a job failed
    (sweep,) = (tmp_path / "out" / "multirun").iterdir()
    job1 = sweep / "1_tiny_char_single"
    assert json.loads((job1 / "summary.json").read_text())["failed"] == []
    assert not (sweep / "0_tiny_char_single" / "summary.json").exists()


@pytest.mark.parametrize(("strategy", "floor"), [("vllm", 25 + 3 * 5), ("single", 3 * 5)])
def test_a_stall_limit_below_what_a_slice_needs_is_refused_with_the_fix(strategy, floor):
    """strategy.stall_timeout_s=15 killed a healthy vLLM engine on its first slice. A limit the
    user typed below the floor (slices of journal_slice_s, vLLM's warm-up) is refused as bad
    input (exit 2) with the value, the rule and the least value that works, not changed behind
    their back; one at or above it stays as asked; the default is never below it."""
    from dataclasses import replace

    from harness.planning.preflight import checked_plan
    from harness.views import verdict_of
    from tests.planning.test_plan import composed, run_config

    run = run_config("tiny_char", strategy, "local")
    run = replace(run, max_concurrent_datasets=1, plan_only=True)  # one slice a call

    def planned(**strategy_values):
        return checked_plan(replace(run, strategy=replace(run.strategy, **strategy_values)))

    low = planned(stall_timeout_s=10)
    (problem,) = [p for p in low.problems if p.startswith("strategy.stall_timeout_s=10:")]
    assert f"below the {floor} s a healthy engine may need" in problem
    assert f"Fix: strategy.stall_timeout_s={floor} or more" in problem
    assert low.bad_input == [problem] and verdict_of(low) == "REFUSED (bad input)"
    assert not any("stall" in n for n in low.notes)
    exact = planned(stall_timeout_s=floor)
    assert exact.stall_timeout_s == floor and exact.fits
    assert not planned(stall_timeout_s=floor, journal_slice_s=10).fits  # tied to the slice
    assert planned().stall_timeout_s >= floor  # the default (null)
    # strategy=auto: refused once on the plan it chose, not a misfit of every candidate
    auto = replace(run, strategy=replace(composed(strategy="auto").strategy, stall_timeout_s=1))
    (only,) = checked_plan(auto).problems
    assert only.startswith("strategy.stall_timeout_s=1: below"), only


def test_a_recovered_stall_says_restarted_and_resumed_not_failed(monkeypatch, capsys, caplog):
    """An engine that died in a dataset and was rebuilt, the dataset resumed on it: the console
    says "restarted and resumed", and nothing is logged as an ERROR or a failure."""
    from types import SimpleNamespace

    from harness.engines.base import EngineDied, stalled
    from harness.evaluation import dataset

    tries: list[int] = []

    def lm_eval(*_: object) -> dict:
        tries.append(1)
        if len(tries) == 1:
            raise stalled(15)
        return {}

    class Engine:  # an engine outside the process: the loop checks it, rebuilds it once
        def revive(self, rebuild: bool = True) -> bool:
            return len(tries) == 1 and rebuild

    monkeypatch.setattr(dataset, "_journaled_lm_eval", lm_eval)
    monkeypatch.setattr(dataset, "_store", lambda *_: None)
    monkeypatch.setattr(dataset, "RemoteEngine", Engine)  # isinstance: only what it checks
    ev = SimpleNamespace(engine=Engine())
    item = SimpleNamespace(dataset=SimpleNamespace(config=SimpleNamespace(task="t")), key={},
                           fingerprint="fp")  # fmt: skip
    with caplog.at_level("INFO"):
        outcome = dataset._checked(ev, "arith_mc", item)  # type: ignore[arg-type]
    assert outcome.status == "ok" and len(tries) == 2
    out = capsys.readouterr().out
    assert "arith_mc: engine restarted and resumed" in out, out
    assert not [r for r in caplog.records if r.levelname == "ERROR"], caplog.text
    assert "failed" not in caplog.text and EngineDied.__name__ in caplog.text


def test_the_final_table_tells_a_reused_dataset_from_a_fresh_one():
    """A dataset taken from the result store shows no time or throughput as if it ran now: its
    status says ``reused``, and a line says what that means; a fresh one keeps its figures."""
    from harness.record.outcome import DatasetOutcome
    from harness.record.summary import RunSummary
    from harness.views import format_summary

    stored = dict(metrics={"acc": 0.5}, eval_time_s=12.5, requests_per_s=40.0, tokens_per_s=900.0)
    reused = DatasetOutcome(name="arith_mc", task="arith_mc", resumed=True, **stored)
    fresh = DatasetOutcome(name="reverse_gen", task="reverse_gen", **stored)
    datasets = {"arith_mc": reused, "reverse_gen": fresh}
    summary = RunSummary(model="m", strategy="s", datasets=datasets).to_dict()
    assert summary["datasets"]["arith_mc"]["resumed"] is True  # summary.json says it too
    lines = format_summary(summary).splitlines()
    (row,) = [line for line in lines if line.startswith("arith_mc ")]
    assert row.split()[1] == "reused" and row.split()[-3:] == ["-", "-", "-"], row
    assert "12.50" not in row and "40.0" not in row
    (other,) = [line for line in lines if line.startswith("reverse_gen ")]
    assert other.split()[1] == "ok" and other.split()[-3:] == ["12.50", "40.0", "900"], other
    assert any(line.startswith("reused: arith_mc taken from the result store") for line in lines)
