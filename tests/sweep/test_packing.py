"""A local sweep's jobs packed onto this node (harness/sweep/packing.py).

What each job was given is read back from the job itself: its summary.json's ``resources``,
its log's "was given" line (CUDA_VISIBLE_DEVICES and its affinity, as the job saw them) and, while
it runs, /proc/<pid>/status of its process (the pid its ``planned`` event names); when each
ran, from its run directory. GPUs come from the small fake NVML node of eight GPUs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.sweep.packing import Grant, Need, NodePool, cpu_ranges, local_resources
from tests.conftest import FAKE_NVML, offline_env, run_harness

H100 = "NVIDIA H100 80GB HBM3:81559"
DATASETS = ["arith_mc", "compare_mc", "reverse_gen"]


def test_shares_are_disjoint_and_come_back_when_a_job_ends():
    pool = NodePool(tuple(str(i) for i in range(8)), tuple(range(16)), 256.0)
    tp4 = Need(gpus=4, cpus=8, memory_gib=128.0)
    first, second = pool.take(tp4), pool.take(tp4)
    assert first is not None and second is not None
    assert set(first.gpus).isdisjoint(second.gpus) and set(first.cpus).isdisjoint(second.cpus)
    assert (first.gpus, second.gpus) == (("0", "1", "2", "3"), ("4", "5", "6", "7"))
    assert pool.take(Need(gpus=1, cpus=1, memory_gib=0.0)) is None  # the node is full
    pool.give_back(first)
    third = pool.take(Need(gpus=8, cpus=1, memory_gib=0.0))
    assert third is None  # a job that needs the whole node waits for all of it
    again = pool.take(tp4)
    assert again is not None and again.gpus == first.gpus and again.cpus == first.cpus
    assert Grant.of(again.to_dict()) == again
    assert again.environment()["CUDA_VISIBLE_DEVICES"] == "0,1,2,3"
    assert again.environment()["HARNESS_JOB_CPUS"] == "0,1,2,3,4,5,6,7"


def test_memory_is_a_resource_too():
    pool = NodePool((), (0, 1, 2, 3), 10.0)
    assert pool.take(Need(gpus=0, cpus=1, memory_gib=6.0)) is not None
    assert pool.take(Need(gpus=0, cpus=1, memory_gib=6.0)) is None  # cores free, memory not
    assert pool.take(Need(gpus=0, cpus=1, memory_gib=4.0)) is not None


def test_a_jobs_need_is_its_share_of_the_node_unless_the_launcher_says_otherwise():
    gpu_node = NodePool(tuple(str(i) for i in range(8)), tuple(range(32)), 1000.0)
    derived = {"gpus_per_node": 4, "cpus_per_task": 64, "mem_gb": 2048, "timeout_min": 60}
    tp4 = local_resources({}, derived, gpu_node)
    assert (tp4["cpus_per_task"], tp4["mem_gb"], tp4["array_parallelism"]) == (16, 500.0, None)
    assert tp4["timeout_min"] == 60
    mine = local_resources({"cpus_per_task": 3, "mem_gb": 7}, {**derived, "cpus_per_task": 3,
                           "mem_gb": 7}, gpu_node)  # fmt: skip
    assert (mine["cpus_per_task"], mine["mem_gb"]) == (3, 7)
    cpu_node = NodePool((), (0, 1), 23.5)
    whole = local_resources({}, {"gpus_per_node": None, "cpus_per_task": 2}, cpu_node)
    assert (whole["cpus_per_task"], whole["mem_gb"]) == (2, 23.5)
    split = local_resources({"array_parallelism": 2}, {"cpus_per_task": 2}, cpu_node)
    assert (split["cpus_per_task"], split["mem_gb"], split["array_parallelism"]) == (1, 11.7, 2)


def test_a_cpu_jobs_cores_are_those_its_tier_plans_its_threads_with():
    # tier.cpus_per_task=1: the plan says one thread, so the job takes one core, not the node.
    cpu_node = NodePool((), (0, 1), 23.5)
    one = local_resources({}, {"gpus_per_node": None, "cpus_per_task": 1}, cpu_node)
    assert (one["cpus_per_task"], one["mem_gb"]) == (1, 11.7)
    pool = NodePool((), (0, 1), 23.5)
    side_by_side = [pool.take(Need.of(one)), pool.take(Need.of(one))]
    assert [g.cpus if g else None for g in side_by_side] == [(0,), (1,)]
    # A tier bigger than the node gets the node; the launcher's own key still wins.
    big = local_resources({}, {"gpus_per_node": None, "cpus_per_task": 16}, cpu_node)
    assert big["cpus_per_task"] == 2
    mine = local_resources({"cpus_per_task": 2}, {"cpus_per_task": 2}, NodePool((), (0,), 8.0))
    assert mine["cpus_per_task"] == 2


def test_a_local_sweeps_plan_asks_for_the_tiers_cores(tmp_path):
    proc = sweep(tmp_path, "dataset=arith_mc,compare_mc", "tier.cpus_per_task=1", "plan_only=true")
    text = proc.communicate(timeout=120)[0]
    assert proc.returncode == 0, text[-3000:]
    assert "cpus-per-task=1 " in text and text.count("1 thread(s)") == 2, text


def test_a_job_bigger_than_the_node_is_refused_with_its_fix():
    node = NodePool(("0", "1"), (0, 1), 16.0)
    said = node.problems(Need(gpus=4, cpus=8, memory_gib=32.0), "job 3")
    assert len(said) == 3
    assert "job 3 needs 4 GPU(s) and this node has 2" in said[0]
    assert "hydra.launcher.cpus_per_task=2 or fewer" in said[1]
    assert "hydra.launcher.mem_gb=16 or less" in said[2]
    assert node.problems(Need(gpus=2, cpus=2, memory_gib=16.0), "job 0") == []


def test_cpu_ranges_are_written_as_taskset_writes_them():
    assert cpu_ranges([0, 1, 2, 3, 6, 8, 9]) == "0-3,6,8-9"
    assert cpu_ranges([5]) == "5" and cpu_ranges([]) == "-"


def sweep(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "harness", "-m", "tracking=none",
         "hydra/launcher=submitit_local", f"outputs_root={tmp_path / 'out'}", *args],
        cwd=tmp_path, env=env or offline_env(tmp_path), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def runs_of(tmp_path: Path) -> dict[str, Path]:
    (sweep_dir,) = (tmp_path / "out" / "multirun").iterdir()
    return {p.name.split("_")[0]: p for p in sweep_dir.iterdir() if p.name[0].isdigit()}


def affinity(pid: int) -> set[int] | None:
    """A running process's cores, as /proc says them (None once it has gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    (line,) = [x for x in status.splitlines() if x.startswith("Cpus_allowed_list:")]
    cores: set[int] = set()
    for part in line.split(":", 1)[1].strip().split(","):
        a, _, b = part.partition("-")
        cores.update(range(int(a), int(b or a) + 1))
    return cores


def watch_affinities(tmp_path: Path, proc: subprocess.Popen) -> dict[str, set[int]]:
    """Each job's cores read from /proc while its process runs (pid from its planned event)."""
    seen: dict[str, set[int]] = {}
    while proc.poll() is None:
        if (tmp_path / "out" / "multirun").is_dir():
            for job, run_dir in runs_of(tmp_path).items():
                events = run_dir / "events.jsonl"
                if job in seen or not events.is_file():
                    continue
                first = events.read_text().split("\n", 1)[0]
                if first.endswith("}") and json.loads(first)["event"] == "planned":
                    cores = affinity(json.loads(first)["pid"])
                    if cores is not None:
                        seen[job] = cores
        time.sleep(0.05)
    return seen


@pytest.mark.slow
def test_three_one_core_jobs_run_two_at_a_time_on_disjoint_cores(tmp_path):
    if len(os.sched_getaffinity(0)) != 2:
        pytest.skip("written for this project's 2-core machines (CI and the developers')")
    proc = sweep(tmp_path, f"dataset={','.join(DATASETS)}", "hydra.launcher.cpus_per_task=1")
    seen = watch_affinities(tmp_path, proc)
    text = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0, text[-3000:]
    runs = runs_of(tmp_path)
    summaries = {job: json.loads((d / "summary.json").read_text()) for job, d in runs.items()}
    spans = {job: (s["started_at"], s["ended_at"]) for job, s in summaries.items()}
    cores = {job: set(s["resources"]["cpus"]) for job, s in summaries.items()}
    assert all(len(c) == 1 for c in cores.values()), cores
    assert all(s["plan"]["threads_per_rank"] == 1 for s in summaries.values())
    assert seen and all(seen[job] == cores[job] for job in seen), (seen, cores)
    most = 0
    for t in sorted(start for start, _ in spans.values()):  # who runs as each job starts
        running = [job for job, (start, end) in spans.items() if start <= t < end]
        most = max(most, len(running))
        assert len(running) <= 2, spans  # two cores
        for a in running:
            for b in running:
                assert a == b or cores[a].isdisjoint(cores[b]), (a, b, cores)
    assert most == 2, spans  # packed: two ran at once
    (sweep_dir,) = (tmp_path / "out" / "multirun").iterdir()
    table = (sweep_dir / "sweep_outcome.txt").read_text()
    assert "given" in table and "CPUs 0" in table and "CPUs 1" in table, table

    # Every job's metrics equal the same datasets' in one plain run on the whole node.
    plain = run_harness(
        [f"dataset=[{','.join(DATASETS)}]", "tracking=none", f"outputs_root={tmp_path / 'plain'}"],
        tmp_path,
    )
    assert plain.returncode == 0, plain.stderr[-3000:]
    (plain_dir,) = (tmp_path / "plain" / "runs").iterdir()
    whole = json.loads((plain_dir / "summary.json").read_text())
    assert len(whole["resources"]["cpus"]) == 2
    for summary in summaries.values():
        ((name, outcome),) = summary["datasets"].items()
        assert outcome["metrics"] == whole["datasets"][name]["metrics"], name


@pytest.mark.slow
def test_two_four_gpu_jobs_get_disjoint_halves_of_an_eight_gpu_node(tmp_path):
    # The fake node has no CUDA: each job starts, sees what it was given, says it, and is refused
    # by its own preflight (vLLM's CPU build cannot run on GPUs). A third waits for a half.
    env = offline_env(tmp_path)
    env["PYTHONPATH"] = os.pathsep.join([str(FAKE_NVML), env.get("PYTHONPATH", "")])
    env["FAKE_NVML_GPUS"] = f"8x{H100}"
    proc = sweep(
        tmp_path, "dataset=[arith_mc]", "strategy=tp2", "strategy.pipeline_parallel_size=2",
        "dataset.arith_mc.limit=4,8,12", env=env,
    )  # fmt: skip
    text = proc.communicate(timeout=300)[0]
    assert proc.returncode == 1, text[-3000:]  # each job refused by its own preflight
    (sweep_dir,) = (tmp_path / "out" / "multirun").iterdir()
    rows = json.loads((sweep_dir / "sweep_outcome.json").read_text())
    given = {r["index"]: r["given"] for r in rows}
    assert [len(g["gpus"]) for g in given.values()] == [4, 4, 4], given
    assert set(given[0]["gpus"]).isdisjoint(given[1]["gpus"])
    assert set(given[0]["gpus"]) | set(given[1]["gpus"]) == {str(i) for i in range(8)}
    spans = {r["index"]: (r["started_at"], r["ended_at"]) for r in rows}
    assert spans[1][0] < spans[0][1] and spans[0][0] < spans[1][1], spans  # side by side
    assert spans[2][0] >= min(spans[0][1], spans[1][1]), spans  # the third waited for a half
    for row in rows:  # what the job itself saw: its CUDA_VISIBLE_DEVICES
        err = sweep_dir / ".submitit" / row["job_id"] / f"{row['job_id']}_0_log.err"
        said = [line for line in err.read_text().splitlines() if "was given" in line]
        assert said == [
            f"job {row['index']} on {os.uname().nodename} was given: GPUs "
            f"{','.join(row['given']['gpus'])}; CPUs {cpu_ranges(row['given']['cpus'])}; "
            f"{row['given']['memory_gib']:g} GiB host memory"
        ], said
        assert "vLLM here is the CPU build" in err.read_text()
