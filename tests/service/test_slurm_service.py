"""A service as a SLURM job on the local cluster (tests/sweep/conftest.py): vLLM's CPU server
served by ``python -m harness.serve ... hydra/launcher=slurm`` on the node's address with a
generated key; a run attaches to it through the registry (nothing loads, the in-process
engines' metric); ``--stop`` cancels the job and no process is left. One vLLM server start
(about 30-60 s). The fake server (tests/service/fake_server.py) stands for vLLM where what is
checked is the job's life: a job that ended is seen dead and never attached to, and a serve
command killed while its job waits leaves the job cancelled."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from harness.paths import PROJECT_ROOT
from harness.service.registry import Status, read_entry, read_registry
from harness.service.slurm_job import job_ended, job_folder, job_state
from tests.conftest import offline_env, run_module
from tests.processes import descendants, live, wait_until
from tests.service.test_races import serve_fake

FIXTURES = f"hydra.searchpath=[file://{PROJECT_ROOT / 'tests' / 'fixtures' / 'conf'}]"
ON_SLURM = (FIXTURES, "tier=slurm_2cpu", "hydra/launcher=slurm")
"""A two-CPU share of the local node (3 GiB), as the sweep tests' jobs get it."""


def serve(root: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return run_module("harness.serve", *args, f"outputs_root={root / 'outputs'}", cwd=root,
                      timeout=timeout)  # fmt: skip


def run(root: Path, name: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["python", "-m", "harness", "model=tiny_char", "tracking=none", *args,
         f"outputs_root={root / 'outputs'}", f"output_dir={root / name}"],
        cwd=root, env=offline_env(root), capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip


def job_processes(entry_pid: int) -> dict[int, str]:
    """The server and every process under it (vLLM's EngineCore), while it runs."""
    return {entry_pid: "server", **descendants(entry_pid)}


@pytest.mark.slurm
@pytest.mark.vllm
@pytest.mark.slow
def test_a_vllm_service_runs_as_a_slurm_job_is_attached_to_and_cancelled(slurm_cluster, tmp_path):
    started = time.perf_counter()
    served = serve(tmp_path, "model=tiny_char", "strategy=vllm", *ON_SLURM)
    took = time.perf_counter() - started
    try:
        out = served.stdout + served.stderr
        assert served.returncode == 0, out[-4000:]
        (path, entry), *others = read_registry(tmp_path / "outputs").entries.items()
        assert not others and entry.launcher == "slurm" and entry.status == Status.ready
        print(f"serve as a SLURM job: {took:.0f}s\n{served.stdout}")
        assert f"submitted as SLURM job {entry.job_id} (1 node(s), 2 CPU(s), 3 GB" in out
        assert f"SLURM job {entry.job_id}" in out and "waiting for vLLM's OpenAI server" in out
        assert f"service {entry.id} ready at {entry.url}" in out
        assert job_state(entry.job_id) == "RUNNING"
        # on the node's address, not loopback: the generated key is required, and kept only in
        # the 0600 registry file (not the command line, the sbatch script, the job's files)
        assert not entry.url.startswith("http://127.") and entry.api_key
        assert entry.api_key not in out
        assert entry.api_key not in Path(f"/proc/{entry.pid}/cmdline").read_text()
        for file in job_folder(path).rglob("*"):
            assert not file.is_file() or entry.api_key.encode() not in file.read_bytes(), file
        assert oct(path.stat().st_mode & 0o777) == "0o600"
        listed = serve(tmp_path, "--list")
        assert f"ready (SLURM job {entry.job_id} RUNNING)" in listed.stdout, listed.stdout
        assert "not yours" not in listed.stdout  # the job's own files are no entries
        attached = run(tmp_path, "first", "strategy=vllm", "dataset=[arith_mc]", *ON_SLURM[:2])
        assert attached.returncode == 0, (attached.stdout + attached.stderr)[-4000:]
        assert f"attached to service {entry.id} at {entry.url}" in attached.stdout
        summary = json.loads((tmp_path / "first" / "summary.json").read_text())
        assert summary["engine"]["service_id"] == entry.id
        assert summary["load_time_s"] < 2.0, summary["load_time_s"]
        assert summary["datasets"]["arith_mc"]["metrics"]["acc"] == 0.995
        assert entry.api_key not in attached.stdout + attached.stderr
        print(f"attached run: load {summary['load_time_s']}s")
        stopping = time.perf_counter()
        processes = job_processes(entry.pid)
        assert len(live(processes)) >= 2, processes  # the server and its EngineCore
        stopped = serve(tmp_path, "--stop", entry.id)
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        assert f"stopped service {entry.id}: SLURM job {entry.job_id} cancelled" in stopped.stdout
        assert job_ended(entry.job_id), job_state(entry.job_id)
        assert wait_until(lambda: live(processes) == {}, 30), live(processes)
        print(f"--stop: {time.perf_counter() - stopping:.1f}s, {stopped.stdout}")
        assert read_registry(tmp_path / "outputs").entries == {}
    finally:
        serve(tmp_path, "--stop", "all", timeout=180)


@pytest.mark.slurm
def test_a_slurm_service_whose_job_ended_is_dead_and_never_attached(slurm_cluster, tmp_path):
    """The job cancelled behind harness's back: ``--list`` says so (SLURM's word), the entry is
    dead, and a serve command of the same deployment starts a new job instead of reusing it."""
    first = serve_fake(tmp_path, 1.0, *ON_SLURM)
    out = first.communicate(timeout=300)[0]
    try:
        assert first.returncode == 0, out[-3000:]
        (path, entry), *_ = read_registry(tmp_path / "outputs").entries.items()
        processes = job_processes(entry.pid)
        subprocess.run(["scancel", entry.job_id], check=True, timeout=60)
        assert wait_until(lambda: job_ended(entry.job_id) is not None, 60)
        listed = serve(tmp_path, "--list")
        assert f"dead: SLURM job {entry.job_id} cancelled" in listed.stdout, listed.stdout
        assert "not yours" not in listed.stdout  # the job's own files are no entries
        assert read_entry(path).status == Status.dead
        assert wait_until(lambda: live(processes) == {}, 30), live(processes)
        again = serve_fake(tmp_path, 1.0, *ON_SLURM)
        out2 = again.communicate(timeout=300)[0]
        assert again.returncode == 0, out2[-3000:]
        assert "serves this model and deployment" not in out2 and "submitted as SLURM job" in out2
    finally:
        serve(tmp_path, "--stop", "all", timeout=180)


@pytest.mark.slurm
def test_a_serve_command_killed_while_its_job_starts_leaves_the_job_cancelled(
    slurm_cluster, tmp_path
):
    proc = serve_fake(tmp_path, 600.0, *ON_SLURM)
    try:

        def submitted() -> bool:
            entries = list(read_registry(tmp_path / "outputs").entries.values())
            return bool(entries) and bool(entries[0].job_id)

        assert wait_until(submitted, 120)
        entry, *_ = read_registry(tmp_path / "outputs").entries.values()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        listed = serve(tmp_path, "--list")
        assert f"its serve command (pid {proc.pid}) ended before it was ready" in listed.stdout
        assert f"SLURM job {entry.job_id} cancelled" in listed.stdout, listed.stdout
        assert job_ended(entry.job_id)
    finally:
        if proc.poll() is None:
            proc.kill()
        serve(tmp_path, "--stop", "all", timeout=180)
