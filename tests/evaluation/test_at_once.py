"""Datasets at once against the one resident engine (``max_concurrent_datasets``): the HF engine
in a process of its own, where ``auto`` means every dataset of the run.

Each dataset's metrics, requests and tokens stay its own and equal the sequential run's; the
events overlap; a failing dataset does not take the others in flight down; a run killed with
datasets in flight resumes; generation settings never cross from one dataset to another.
"""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from harness.telemetry.attribute import attribute
from harness.telemetry.summary import GpuPhase, PhaseSummary
from tests.conftest import BUNDLED_TASKS, FIXTURES, json_lines, offline_env, run_harness
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


@pytest.fixture(scope="module")
def sequential(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("sequential")
    args = [f"outputs_root={tmp / 'out'}", "tracking=none", OWN_PROCESS]
    proc = run_harness([*args, "max_concurrent_datasets=1"], tmp)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return summary_of(tmp / "out")


@pytest.mark.slow
def test_five_datasets_at_once_give_the_sequential_figures(sequential, tmp_path):
    out = tmp_path / "out"
    proc = run_harness([f"outputs_root={out}", "tracking=none", OWN_PROCESS], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "5 datasets at once against the resident engine" in proc.stdout
    summary = summary_of(out)
    assert figures(summary) == figures(sequential)
    assert summary["engine"]["builds"] == 1
    # The events overlap: every dataset starts before the first one is done.
    events = [e for e in events_of(out) if e["event"].startswith("dataset_")]
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
        assert got[name] == figures(sequential)[name]


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
    assert resumed == {n: d["metrics"] for n, d in sequential["datasets"].items()}


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
