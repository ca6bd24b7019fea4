"""Datasets at once against the one resident engine (``max_concurrent_datasets``): the HF engine
in a process of its own, where ``auto`` means every dataset of the run.

The plan decides how many (``Plan.datasets_at_once``), and plan.json, summary.json and MLflow's
``plan.*`` record the number that ran at once. Each dataset's metrics, requests and tokens stay
its own and equal the sequential run's; the events overlap; a failing dataset does not take the
others in flight down; a run killed with datasets in flight resumes; generation settings never
cross from one dataset to another.
"""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.telemetry.attribute import attribute
from harness.telemetry.summary import GpuPhase, PhaseSummary
from tests.conftest import BUNDLED_TASKS, FIXTURES, json_lines, offline_env, run_harness
from tests.evaluation.in_flight import PLACES, recorded_at_once
from tests.processes import wait_until

OWN_PROCESS = "strategy.replica_backend=process"


def run_dir_of(out: Path) -> Path:
    (run_dir,) = sorted((out / "runs").iterdir())[-1:]
    return run_dir


def summary_of(out: Path) -> dict:
    return json.loads((run_dir_of(out) / "summary.json").read_text())


def events_of(out: Path) -> list[dict]:
    """The run's events (a line being written as this reads it is left out)."""
    return json_lines(run_dir_of(out) / "events.jsonl")


def figures(summary: dict) -> dict:
    """What must not change with concurrency: each dataset's metrics, requests and tokens."""
    keep = ("metrics", "requests", "prompt_tokens", "generated_tokens", "status")
    return {n: {k: d[k] for k in keep} for n, d in summary["datasets"].items()}


@dataclass
class Run:
    summary: dict
    run_dir: Path
    db: Path
    """Its MLflow store (``tracking=local``)."""
    stdout: str


def tracked_run(tmp: Path, *more: str) -> Run:
    """A run of the five bundled datasets, the HF engine in a process of its own, tracked."""
    out, db = tmp / "out", tmp / "mlflow.db"
    args = [f"outputs_root={out}", "tracking=local", f"tracking.uri=sqlite:///{db}", OWN_PROCESS]
    proc = run_harness([*args, *more], tmp)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return Run(summary_of(out), run_dir_of(out), db, proc.stdout)


@pytest.fixture(scope="module")
def sequential(tmp_path_factory) -> Run:
    return tracked_run(tmp_path_factory.mktemp("sequential"), "max_concurrent_datasets=1")


@pytest.mark.slow
def test_five_datasets_at_once_give_the_sequential_figures(sequential, tmp_path):
    run = tracked_run(tmp_path)
    assert "5 datasets at once against the resident engine" in run.stdout
    summary = run.summary
    assert figures(summary) == figures(sequential.summary)
    # What ran at once is what the plan said, recorded in every place the plan is.
    assert recorded_at_once(run.run_dir, run.db) == dict.fromkeys(PLACES, 5)
    assert recorded_at_once(sequential.run_dir, sequential.db) == dict.fromkeys(PLACES, 1)
    assert summary["engine"]["builds"] == 1
    # The events overlap: every dataset starts before the first one is done.
    events = [e for e in events_of(tmp_path / "out") if e["event"].startswith("dataset_")]
    first_done = min(i for i, e in enumerate(events) if e["event"] == "dataset_done")
    started = {e["dataset"] for e in events[:first_done] if e["event"] == "dataset_started"}
    assert started == set(BUNDLED_TASKS), [e["event"] + " " + e["dataset"] for e in events]


@pytest.mark.slow
def test_a_failing_dataset_leaves_the_others_in_flight_whole(sequential, tmp_path):
    out = tmp_path / "out"
    args = [
        f"outputs_root={out}", "tracking=none", OWN_PROCESS,
        f"hydra.searchpath=[file://{FIXTURES / 'conf'}]",
        "dataset=[arith_mc,boom,compare_mc]",
    ]  # fmt: skip
    proc = run_harness(args, tmp_path)
    assert proc.returncode == 1, proc.stderr[-3000:]
    summary = summary_of(out)
    assert summary["failed"] == ["boom"]
    got = figures(summary)
    for name in ("arith_mc", "compare_mc"):
        assert got[name] == figures(sequential.summary)[name]


@pytest.mark.slow
def test_a_run_killed_with_datasets_in_flight_resumes(sequential, tmp_path):
    out = tmp_path / "out"
    args = [f"outputs_root={out}", "tracking=none", OWN_PROCESS]
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness", *args], cwd=tmp_path, env=offline_env(tmp_path),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip

    def three_in_flight() -> bool:
        runs = out / "runs"
        if not runs.is_dir() or not (run_dir_of(out) / "events.jsonl").is_file():
            return False
        events = [e["event"] for e in events_of(out)]
        return events.count("dataset_started") >= 3 and "dataset_done" not in events

    assert wait_until(three_in_flight, timeout=300, interval=0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    proc = run_harness(args, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = summary_of(out)
    resumed = {n: d["metrics"] for n, d in summary["datasets"].items()}
    assert resumed == {n: d["metrics"] for n, d in sequential.summary["datasets"].items()}


@pytest.mark.slow
def test_each_dataset_keeps_its_own_generation_settings(tmp_path):
    """reverse_gen stops at a newline after at most 12 tokens; successor_gen, in flight with
    it (their slices merged into the engine's calls), is cut at 2 tokens and stops at "1". Each
    answer is cut by its own dataset's settings, and by no other's."""
    out = tmp_path / "out"
    args = [
        f"outputs_root={out}", "tracking=none", OWN_PROCESS, "log_samples=true",
        "dataset=[reverse_gen,successor_gen,arith_mc]",
        "dataset.successor_gen.gen_kwargs={max_gen_toks: 2, until: ['1']}",
    ]  # fmt: skip
    proc = run_harness(args, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = run_dir_of(out)

    def answers(name: str) -> list[str]:
        with gzip.open(run_dir / "samples" / f"{name}.jsonl.gz", "rt") as handle:
            return [json.loads(line)["resps"][0][0] for line in handle]

    successor, reverse = answers("successor_gen"), answers("reverse_gen")
    assert len(successor) == len(reverse) == 200
    assert all(len(a) <= 2 and "1" not in a for a in successor), successor[:20]
    assert max(len(a) for a in reverse) > 2  # not cut at 2 tokens
    summary = summary_of(out)
    assert summary["datasets"]["reverse_gen"]["metrics"]["exact_match"] == 1.0


@pytest.mark.parametrize(
    "overrides,expected",
    [
        ([], 1),  # auto, the HF engine in this process: one at a time
        ([OWN_PROCESS], 5),  # auto, an engine of its own: every dataset of the run
        (["strategy=vllm"], 5),
        (["strategy=dp", "strategy.engine=hf"], 5),  # Ray replicas
        (["dataset=[arith_mc,compare_mc]", OWN_PROCESS], 2),
        (["max_concurrent_datasets=2", OWN_PROCESS], 2),
        (["max_concurrent_datasets=3"], 3),  # asked for, in this process too
        (["max_concurrent_datasets=9"], 5),  # never more than the run has
    ],
)
def test_the_plan_decides_how_many_datasets_share_the_engine(compose_cfg, overrides, expected):
    from harness.config.schema import to_run_config
    from harness.planning.auto import plan_run
    from harness.views import format_plan

    plan = plan_run(to_run_config(compose_cfg(*overrides)))
    assert plan.datasets_at_once == expected
    assert plan.to_dict()["datasets_at_once"] == expected  # plan.json, summary, MLflow plan.*
    assert f"at once        {expected} dataset(s) evaluated at once" in format_plan(plan)


def test_energy_of_datasets_in_flight_together_is_split_by_tokens():
    def phase(name: str, duration: float, energy: float) -> PhaseSummary:
        gpu = GpuPhase("gpu0", 10, 40.0, 30.0, 80.0, energy, "counter")
        return PhaseSummary(name, duration, [gpu], energy, 40.0, None, None)

    phases = [phase("load", 5, 500.0), phase("a", 2, 200.0), phase("a+b", 4, 900.0)]
    phases.append(phase("b", 1, 100.0))
    split = {p.name: p for p in attribute(phases, {"a": 1000, "b": 2000})}
    assert set(split) == {"load", "a", "b"}
    assert split["a"].energy_j == pytest.approx(200 + 300)  # alone, then a third of a+b
    assert split["b"].energy_j == pytest.approx(600 + 100)
    assert split["a"].duration_s == 6 and split["b"].duration_s == 5  # time in flight
    measured = sum(p.energy_j for p in phases if p.name != "load")
    assert sum(split[n].energy_j for n in "ab") == pytest.approx(measured)  # the totals hold
    assert split["a"].gpus[0].energy_j == pytest.approx(500)
    assert attribute(phases[:2], {}) == phases[:2]  # nothing shared: as measured
