"""Sweeps through hydra/launcher=slurm, on a real SLURM cluster on this machine.

Resources are read back from SLURM itself (sacct) or from the sbatch script submitit wrote, never
from harness's own objects; what became of each job from the sweep's outcome table, its run
directory, the result store and the MLflow store.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from harness.paths import PROJECT_ROOT
from tests.big_task import journaled, write_big_generation_task
from tests.conftest import TINY_MODEL, json_lines, offline_env, run_module, run_offline
from tests.processes import wait_until

FIXTURES = PROJECT_ROOT / "tests" / "fixtures"
SEARCHPATH = f"hydra.searchpath=[file://{FIXTURES / 'conf'}]"


def sweep_args(tmp_path: Path, *args: str) -> list[str]:
    return [
        sys.executable, "-m", "harness", "-m", SEARCHPATH, *args, "hydra/launcher=slurm",
        "hydra.launcher.poll_s=2", f"outputs_root={tmp_path / 'out'}",
    ]  # fmt: skip


def run_sweep(
    tmp_path: Path, *args: str, timeout: float = 300
) -> tuple[subprocess.CompletedProcess[str], Path]:
    """Run a sweep to its end; returns the process and the sweep directory."""
    proc = run_offline(sweep_args(tmp_path, *args), tmp_path, timeout=timeout)
    assert (tmp_path / "out" / "multirun").is_dir(), proc.stdout + proc.stderr
    return proc, the_sweep_dir(tmp_path)


def the_sweep_dir(tmp_path: Path) -> Path:
    (sweep,) = (tmp_path / "out" / "multirun").iterdir()
    return sweep


def outcome(sweep: Path) -> list[dict]:
    return json.loads((sweep / "sweep_outcome.json").read_text())


def sacct(job_ids: list[str], fields: str, *extra: str) -> list[dict[str, str]]:
    """sacct's rows (one per job; array tasks as <id>_<index>) with these fields."""
    base = ",".join(sorted({j.split("_")[0] for j in job_ids}))
    done = subprocess.run(
        ["sacct", "-X", "-P", "-o", fields, "-j", base, *extra],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    lines = done.stdout.splitlines()
    names = lines[0].split("|")
    return [dict(zip(names, line.split("|"), strict=True)) for line in lines[1:]]


def submitted_jobs(sweep: Path) -> list[str]:
    folder = sweep / ".submitit"
    return (
        sorted(p.name for p in folder.iterdir() if p.name[0].isdigit()) if folder.is_dir() else []
    )


# ---------------------------------------------------------------------------------------------
# GPU tiers this machine cannot run: the sbatch scripts submitit generates


def plan_only_scripts(tmp_path: Path, *args: str) -> tuple[str, list[str]]:
    proc = subprocess.run(
        sweep_args(tmp_path, *args, "plan_only=true"),
        cwd=tmp_path, env=offline_env(tmp_path), capture_output=True, text=True, timeout=120,
        check=False,
    )  # fmt: skip
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text[-3000:]
    assert "Traceback" not in text and "nothing submitted" in text
    sweep = the_sweep_dir(tmp_path)
    assert submitted_jobs(sweep) == []  # nothing went to SLURM
    scripts = [p.read_text() for p in sorted((sweep / "sbatch").glob("array_*.sbatch"))]
    shutil.rmtree(tmp_path / "out")
    return text, scripts


def sbatch_lines(script: str) -> dict[str, str]:
    out = {}
    for line in script.splitlines():
        if line.startswith("#SBATCH --"):
            key, _, value = line.removeprefix("#SBATCH --").partition("=")
            out[key] = value
    return out


def test_gpu_sweeps_generate_the_sbatch_lines_their_plans_need(tmp_path):
    # falcon_40b tp4 on 'large' (8 x H100, 64 CPUs, 1024 GiB): 4 GPUs, half the node's CPUs and
    # memory, the tier's time limit and partition.
    _, (script,) = plan_only_scripts(tmp_path, "model=falcon_40b", "strategy=tp4", "tier=large")
    lines = sbatch_lines(script)
    assert lines["gpus-per-node"] == "4"
    assert lines["nodes"] == "1"
    assert lines["ntasks-per-node"] == "1"
    assert lines["cpus-per-task"] == "32"
    assert lines["mem"] == "512GB"
    assert lines["time"] == "480"
    assert lines["partition"] == "gpu"
    assert "srun" in script and "submitit.core._submit" in script

    # falcon_180b tp4_pp2 on 'xlarge' (2 nodes x 8): one pipeline stage per node, so two nodes
    # of four GPUs, one task per node (rank 0 evaluates, the other joins its Ray cluster).
    _, (script,) = plan_only_scripts(
        tmp_path, "model=falcon_180b", "strategy=tp4_pp2", "tier=xlarge"
    )
    lines = sbatch_lines(script)
    assert (lines["nodes"], lines["gpus-per-node"], lines["ntasks-per-node"]) == ("2", "4", "1")
    assert (lines["mem"], lines["time"], lines["partition"]) == ("512GB", "720", "gpu")
    assert lines["cpus-per-task"] == "32"


def test_a_mixed_gpu_sweep_gives_one_submission_per_shape(tmp_path):
    text, scripts = plan_only_scripts(
        tmp_path, "model=qwen3_8b,falcon_180b", "strategy=auto", "tier=auto"
    )
    assert len(scripts) == 2, text
    small, large = (sbatch_lines(s) for s in scripts)
    assert (small["gpus-per-node"], small["time"], small["mem"]) == ("1", "120", "64GB")
    assert (large["gpus-per-node"], large["time"], large["mem"]) == ("8", "480", "1024GB")
    assert "array" not in small and "array" not in large  # one job each
    assert "job array 1: 1 job(s)" in text and "job array 2: 1 job(s)" in text


# ---------------------------------------------------------------------------------------------
# On the local cluster


@pytest.mark.slurm
def test_a_sweep_with_a_job_that_cannot_run_submits_nothing(slurm_cluster, tmp_path):
    # job 1 plans 0.5 GiB of host memory for a model that needs 1 GiB: refused, with its reason,
    # and job 0 (which fits) is not submitted either.
    proc, sweep = run_sweep(
        tmp_path, "tier=slurm_1cpu", "tier.host_memory_gib=2,0.5", "dataset=[arith_mc]"
    )
    text = proc.stdout + proc.stderr
    assert proc.returncode == 2, text[-3000:]
    assert "Traceback" not in text
    assert "1 of 2 job(s) cannot run" in text and "job 1 (tiny_char/single" in text
    assert "does not fit" in text and "Nothing was submitted" in text
    assert submitted_jobs(sweep) == []

    # Every plan fits, but SLURM refuses the shape (no such partition): nothing submitted.
    shutil.rmtree(tmp_path / "out")
    proc, sweep = run_sweep(
        tmp_path, "tier=slurm_1cpu,slurm_2cpu", "tier.partition=nosuch", "dataset=[arith_mc]"
    )
    text = proc.stdout + proc.stderr
    assert proc.returncode == 2, text[-3000:]
    assert "SLURM refuses job array" in text and "invalid partition" in text.lower()
    assert submitted_jobs(sweep) == []


@pytest.mark.slurm
def test_a_sweep_runs_each_resource_shape_as_its_own_array(slurm_cluster, tmp_path):
    from mlflow.tracking import MlflowClient

    started = time.perf_counter()
    proc, sweep = run_sweep(
        tmp_path,
        "tier=slurm_1cpu,slurm_2cpu",
        "dataset=[arith_mc]",
        "dataset.arith_mc.limit=5,6",
        "tracking=local",
    )
    took = time.perf_counter() - started
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text[-3000:]
    rows = outcome(sweep)
    assert [r["state"] for r in rows] == ["COMPLETED"] * 4, text[-3000:]
    assert (sweep / "sweep_outcome.txt").read_text().startswith("sweep outcome")
    print(f"4-job sweep over two shapes: {took:.1f}s")

    # Each job's results in its own sweep sub-directory.
    for row in rows:
        run_dir = Path(row["run_dir"])
        assert run_dir.parent == sweep
        assert (run_dir / "results" / "arith_mc.json").is_file()
        assert json.loads((run_dir / "summary.json").read_text())["failed"] == []

    # Two arrays, with the resources of their tier, as SLURM itself has them.
    by_job = {r["JobID"]: r for r in sacct([r["job_id"] for r in rows], "JobID,AllocCPUS,ReqMem")}
    arrays = {r["job_id"].split("_")[0] for r in rows}
    assert len(arrays) == 2
    got = {
        (r["tier"], by_job[r["job_id"]]["AllocCPUS"], by_job[r["job_id"]]["ReqMem"]) for r in rows
    }
    assert got == {("slurm_1cpu", "1", "2G"), ("slurm_2cpu", "2", "3G")}
    shown = subprocess.run(
        ["scontrol", "show", "job", rows[-1]["job_id"].split("_")[0]],
        capture_output=True, text=True, check=False,
    ).stdout  # fmt: skip
    if shown:  # still remembered by slurmctld (MinJobAge): its own account agrees
        assert "NumCPUs=2" in shown and "mem=3G" in shown

    # Every run in the MLflow store, finished, each pointing at its run directory.
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'out' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("harness")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 4
    assert {r.info.status for r in parents} == {"FINISHED"}
    assert {r.data.tags["run_dir"] for r in parents} == {row["run_dir"] for row in rows}


@pytest.mark.slurm
def test_failed_killed_and_timed_out_jobs_are_reported_and_never_hang(slurm_cluster, tmp_path):
    # job 0 sleeps past its 1-minute limit, job 1's metric raises, job 2 is killed with SIGKILL.
    started = time.perf_counter()
    proc, sweep = run_sweep(
        tmp_path,
        "tier=slurm_1cpu",
        "tier.time_limit_min=1",
        "dataset=sleepy,boom,sigkill",
        "tracking=none",
        "hydra.launcher.signal_delay_s=10",
        "hydra.launcher.max_num_timeout=0",
        timeout=400,
    )
    took = time.perf_counter() - started
    text = proc.stdout + proc.stderr
    assert proc.returncode == 1, text[-3000:]
    assert "Traceback" not in proc.stdout
    print(f"failure sweep (time limit 1 min): {took:.1f}s")
    timeout, raised, killed = outcome(sweep)
    assert timeout["state"] == "TIMEOUT" and "time limit" in timeout["detail"]
    assert raised["state"] == "FAILED"
    assert "boom (RuntimeError: boom: this metric always fails)" in raised["detail"]
    assert (raised["datasets_ok"], raised["datasets_failed"]) == (0, 1)
    assert killed["state"] == "FAILED" and "SIGKILL" in killed["detail"]
    assert "3 of 3 job(s) did not complete: 0 (TIMEOUT), 1 (FAILED), 2 (FAILED)" in proc.stdout
    slurm = {r["JobID"]: r["State"] for r in sacct([timeout["job_id"]], "JobID,State")}
    assert slurm[timeout["job_id"]] == "TIMEOUT" and slurm[killed["job_id"]] == "FAILED"


@pytest.mark.slurm
def test_a_job_that_raises_is_reported_with_its_error(slurm_cluster, tmp_path):
    # Every file is there when the sweep is planned, but the model cannot load in the job: its
    # tokenizer file is garbage (a missing one is refused while planning).
    broken = tmp_path / "tiny_char_broken_tokenizer"
    shutil.copytree(TINY_MODEL, broken)
    (broken / "tokenizer.json").write_text("{not a tokenizer")
    proc, sweep = run_sweep(
        tmp_path, "tier=slurm_1cpu", f"model.pretrained={broken}", "dataset=[arith_mc]",
        "dataset.arith_mc.limit=5", "tracking=none",
    )  # fmt: skip
    text = proc.stdout + proc.stderr
    assert proc.returncode == 1, text[-3000:]
    (row,) = outcome(sweep)
    assert row["state"] == "FAILED" and row["detail"].startswith("raised "), row
    assert "job 0 FAILED: raised" in proc.stdout


@pytest.mark.slurm
def test_a_job_requeued_at_its_time_limit_resumes_from_the_result_store(slurm_cluster, tmp_path):
    # arith_mc is evaluated and stored; slow_once then outlasts the 2-minute limit. SLURM warns
    # the job (USR2) 45 s ahead, submitit checkpoints and requeues it, and the second run takes
    # arith_mc from the store and evaluates only slow_once (quick once requeued).
    args = sweep_args(
        tmp_path,
        "tier=slurm_1cpu",
        "tier.time_limit_min=2",
        "dataset=[arith_mc,slow_once]",
        "dataset.arith_mc.limit=10",
        "tracking=none",
        "hydra.launcher.signal_delay_s=45",
        "hydra.launcher.max_num_timeout=1",
    )
    store = tmp_path / "out" / "store" / "tiny_char"
    started = time.perf_counter()
    proc = subprocess.Popen(
        args, cwd=tmp_path, env=offline_env(tmp_path), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    first: tuple[int, int] | None = None
    while proc.poll() is None and time.perf_counter() - started < 400:
        records = list(store.glob("arith_mc-*.json")) if store.is_dir() else []
        if records and first is None:
            stat = records[0].stat()
            first = (stat.st_ino, stat.st_mtime_ns)
        time.sleep(0.5)
    if proc.poll() is None:
        proc.kill()
    out, _ = proc.communicate()
    took = time.perf_counter() - started
    assert proc.returncode == 0, out[-3000:]
    print(f"requeue sweep (time limit 2 min): {took:.1f}s")
    assert "requeued" in out
    sweep = the_sweep_dir(tmp_path)
    (row,) = outcome(sweep)
    assert row["state"] == "COMPLETED"

    # SLURM ran it twice: one run ended REQUEUED.
    runs = sacct([row["job_id"]], "JobID,State,End", "--duplicates")
    assert runs[0]["State"] == "REQUEUED", runs
    # Counted from the result store: arith_mc stored once, in the first run, never rewritten.
    records = sorted(p.name.split("-")[0] for p in store.glob("*.json"))
    assert records == ["arith_mc", "slow_once"]
    (record,) = store.glob("arith_mc-*.json")
    assert first is not None and (record.stat().st_ino, record.stat().st_mtime_ns) == first
    summary = json.loads((Path(row["run_dir"]) / "summary.json").read_text())
    assert summary["resumed"] == ["arith_mc"] and summary["failed"] == []


@pytest.mark.slurm
def test_a_job_requeued_inside_a_dataset_resumes_inside_it(slurm_cluster, tmp_path):
    # scontrol requeue while the job is in the middle of 20,000 generations: the job's second run
    # answers what the first journaled from the journal and asks only the rest. (submitit lets
    # a job's SIGTERM pass, so the first run goes on until SLURM's KillWait ends it: the dataset
    # must outlast that.)
    (tmp_path / "tasks").mkdir()
    tasks = write_big_generation_task(tmp_path / "tasks", GENERATIONS)
    data = [f"task_paths=[{tasks}]", f"allowed_roots=[{tasks}]", "dataset=[big_gen]"]
    data += ["strategy.journal_slice_s=0.5"]  # slices small enough for the requeue to land inside
    out = tmp_path / "out"
    proc = subprocess.Popen(
        sweep_args(tmp_path, "tier=slurm_1cpu", *data, "tracking=none"), cwd=tmp_path,
        env=offline_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    guard = threading.Timer(900, proc.kill)  # fails, never hangs (CI: up to 560 s)
    guard.start()
    try:
        reached = wait_until(lambda: journaled(out) >= 2000, timeout=300, interval=0.05)
        assert reached, "the job never journaled 2000 requests"
        (job,) = submitted_jobs(the_sweep_dir(tmp_path))
        requeued = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
        before = journaled(out)
        assert requeued.returncode == 0, requeued.stderr
        text = proc.communicate(timeout=880)[0]
    finally:
        guard.cancel()
    assert proc.returncode == 0, text[-3000:]
    (row,) = outcome(the_sweep_dir(tmp_path))
    assert row["state"] == "COMPLETED", text[-3000:]
    runs = sacct([row["job_id"]], "JobID,State", "--duplicates")
    assert runs[0]["State"] == "REQUEUED", runs  # SLURM's own account: it ran twice
    run_dir = Path(row["run_dir"])
    planned = [e for e in json_lines(run_dir / "events.jsonl") if e["event"] == "planned"]
    assert len(planned) == 2, "one run before the requeue, one after"
    big = json.loads((run_dir / "summary.json").read_text())["datasets"]["big_gen"]
    assert big["requests_journaled"] >= before > 0 and big["requests"] > 0  # inside the dataset
    assert big["requests"] + big["requests_journaled"] == GENERATIONS

    plain = run_module(
        "harness", f"outputs_root={tmp_path / 'plain'}", *data, "tracking=none", cwd=tmp_path
    )
    assert plain.returncode == 0, plain.stderr[-3000:]
    (plain_dir,) = (tmp_path / "plain" / "runs").iterdir()
    uninterrupted = json.loads((plain_dir / "summary.json").read_text())["datasets"]["big_gen"]
    assert big["metrics"] == uninterrupted["metrics"]


GENERATIONS = 20000


@pytest.mark.slurm
def test_ctrl_c_cancels_every_job_of_the_sweep(slurm_cluster, tmp_path):
    proc = subprocess.Popen(
        sweep_args(tmp_path, "tier=slurm_1cpu", "dataset=sleepy", "dataset.sleepy.limit=1,2,3",
                   "tracking=none"),
        cwd=tmp_path, env=offline_env(tmp_path), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    guard = threading.Timer(240, proc.kill)  # a test that fails, never one that hangs
    guard.start()
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if "running" in line:  # two jobs running (one CPU each), the third one queued
            break
    proc.send_signal(signal.SIGINT)
    started = time.perf_counter()
    out = "".join(lines) + proc.communicate(timeout=90)[0]
    guard.cancel()
    assert proc.returncode == 130, out[-3000:]
    print(f"Ctrl-C to every job cancelled: {time.perf_counter() - started:.1f}s")
    rows = outcome(the_sweep_dir(tmp_path))
    assert [r["state"] for r in rows] == ["CANCELLED"] * 3, (rows, out[-3000:])
    ids = [r["job_id"] for r in rows]
    queued = subprocess.run(
        ["squeue", "-h", "-j", ",".join(sorted({i.split("_")[0] for i in ids}))],
        capture_output=True, text=True, check=False,
    ).stdout  # fmt: skip
    assert queued.strip() == ""
    assert {r["State"].split()[0] for r in sacct(ids, "JobID,State")} == {"CANCELLED"}


@pytest.mark.slurm
def test_a_job_of_two_tasks_is_run_by_rank_0_only(slurm_cluster, tmp_path):
    # What a multi-node job is made of (one task per node), on one node: rank 1 has no Ray
    # cluster to join here and ends; rank 0 runs the job, once.
    proc, sweep = run_sweep(
        tmp_path, "tier=slurm_1cpu", "hydra.launcher.tasks_per_node=2", "dataset=[arith_mc]",
        "dataset.arith_mc.limit=5", "tracking=none",
    )  # fmt: skip
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text[-3000:]
    (row,) = outcome(sweep)
    assert row["state"] == "COMPLETED"
    (job,) = sacct([row["job_id"]], "JobID,AllocCPUS")
    assert job["AllocCPUS"] == "2"  # two tasks of one CPU
    logs = sweep / ".submitit" / row["job_id"]
    said = (logs / f"{row['job_id']}_1_log.err").read_text()
    assert "no distributed engine to join (it runs on one node)" in said
    assert len(list((tmp_path / "out" / "store").rglob("arith_mc-*.json"))) == 1


@pytest.mark.slow
def test_a_local_sweep_reports_each_job_and_exits_non_zero_on_failure(tmp_path):
    # hydra/launcher=submitit_local: the same planning, outcome table and exit code, no cluster.
    proc = subprocess.run(
        [sys.executable, "-m", "harness", "-m", SEARCHPATH, "dataset=compare_mc,boom",
         "tracking=none", "hydra/launcher=submitit_local", f"outputs_root={tmp_path / 'out'}"],
        cwd=tmp_path, env=offline_env(tmp_path), capture_output=True, text=True, timeout=300,
        check=False,
    )  # fmt: skip
    text = proc.stdout + proc.stderr
    assert proc.returncode == 1, text[-3000:]
    assert "Traceback" not in text and "UserWarning" not in text
    ok, failed = outcome(the_sweep_dir(tmp_path))
    assert (ok["state"], ok["datasets_ok"]) == ("COMPLETED", 1)
    assert failed["state"] == "FAILED" and "boom (RuntimeError" in failed["detail"]


@pytest.mark.slow
def test_ctrl_c_in_a_local_sweep_ends_each_run_killed_in_one_line(tmp_path):
    # Two jobs evaluating at once; Ctrl-C as a terminal sends it (to the whole foreground process
    # group). Each run ends as a single run ends on Ctrl-C: KILLED in its events and in MLflow;
    # the console says so in one line, no traceback (submitit's controllers printed two), 130.
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness", "-m", SEARCHPATH, "dataset=sleepy",
         "dataset.sleepy.limit=1,2", "tracking=local", "hydra/launcher=submitit_local",
         "hydra.launcher.array_parallelism=2", f"outputs_root={tmp_path / 'out'}"],
        cwd=tmp_path, env=offline_env(tmp_path), stdout=(tmp_path / "console.txt").open("w"),
        stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    guard = threading.Timer(240, proc.kill)  # a test that fails, never one that hangs
    guard.start()
    events = []
    while proc.poll() is None:
        events = list((tmp_path / "out" / "multirun").glob("*/*_tiny_char_single/events.jsonl"))
        if len(events) == 2 and all("dataset_started" in e.read_text() for e in events):
            break
        time.sleep(0.5)
    assert proc.poll() is None, (tmp_path / "console.txt").read_text()[-3000:]
    time.sleep(1.0)  # both runs well inside their dataset
    os.killpg(proc.pid, signal.SIGINT)
    started = time.perf_counter()
    proc.wait(timeout=120)
    guard.cancel()
    out = (tmp_path / "console.txt").read_text()
    print(f"Ctrl-C to every local job ended: {time.perf_counter() - started:.1f}s")
    assert proc.returncode == 130, out[-3000:]
    assert "Traceback" not in out and "KeyboardInterrupt" not in out, out[-3000:]
    said = [line for line in out.splitlines() if "interrupted" in line]
    assert len(said) == 1 and said[0].startswith("interrupted (Ctrl-C): "), said
    rows = outcome(the_sweep_dir(tmp_path))
    assert [r["state"] for r in rows] == ["CANCELLED"] * 2, rows
    for path in events:
        last = json.loads(path.read_text().splitlines()[-1])
        assert (last["event"], last["status"]) == ("run_done", "KILLED"), path

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'out' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("harness").experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert sorted(r.info.status for r in parents) == ["KILLED", "KILLED"], parents
    # Each job's task said it in one line, in its own log; its controller said nothing.
    for row in rows:
        job_dir = Path(row["log"]).parent
        err = next(job_dir.glob("*_0_log.err")).read_text()
        assert "Traceback" not in err and "interrupted (Ctrl-C): the run is marked KILLED" in err
        assert next(job_dir.glob("*_controller.log")).read_text() == ""


@pytest.mark.slow
def test_a_local_sweep_says_which_jobs_mlflow_lost_and_how_to_replay_them(tmp_path):
    # Nothing listens at the tracking URI: each job evaluates, its tracking fails; the sweep's
    # outcome says so per job and in a summary with the replay command, and exits 3, not 0.
    from tests.tracking.test_tracking_server import free_port

    proc = subprocess.run(
        [sys.executable, "-m", "harness", "-m", SEARCHPATH, "dataset=[arith_mc]",
         "dataset.arith_mc.limit=2,3", "tracking=server",
         f"tracking.uri=http://127.0.0.1:{free_port()}", "hydra/launcher=submitit_local",
         f"outputs_root={tmp_path / 'out'}"],
        cwd=tmp_path, env=offline_env(tmp_path), capture_output=True, text=True, timeout=300,
        check=False,
    )  # fmt: skip
    text = proc.stdout + proc.stderr
    assert proc.returncode == 3, text[-3000:]
    rows = outcome(the_sweep_dir(tmp_path))
    assert [r["state"] for r in rows] == ["COMPLETED"] * 2, rows
    for row in rows:
        assert row["tracking"].startswith("failed: MLflow start failed at http://127.0.0.1:"), row
        assert f"job {row['index']} completed, tracking lost: MLflow start failed" in text
    assert "2 of 2 job(s) completed; MLflow tracking failed in 2" in text
    assert f"python -m harness.replay {rows[0]['run_dir']} {rows[1]['run_dir']}" in text
    assert "all 2 job(s) completed" not in text
