"""submitit's SLURM executor and SLURM's own commands: sbatch scripts, ``sbatch --test-only``,
job states from ``sacct`` (``squeue`` where accounting cannot answer), ``scancel``."""

from __future__ import annotations

import logging
import re
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from harness.sweep.plan import Group

log = logging.getLogger(__name__)

GENERIC_KEYS = (
    "timeout_min",
    "cpus_per_task",
    "gpus_per_node",
    "tasks_per_node",
    "mem_gb",
    "nodes",
    "name",
    "stderr_to_stdout",
)
"""submitit's cluster-independent parameter names (hydra-submitit's ``BaseQueueConf``)."""

OWN_KEYS = ("_target_", "submitit_folder", "max_num_timeout", "poll_s", "array_parallelism")
"""Launcher keys that are not sbatch parameters of an executor (array_parallelism is applied per
group; for SLURM it becomes the ``%N`` of ``--array``)."""

PENDING_STATES = ("PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING", "SUSPENDED")
"""SLURM states of a job that has not started, or will start again."""


def executor_parameters(executor: Any, params: dict[str, Any]) -> dict[str, Any]:
    """``params`` in the executor's own names (``mem_gb`` -> ``mem``...), as submitit's
    AutoExecutor converts them, without the keys that are ours."""
    kept = {k: v for k, v in params.items() if k not in OWN_KEYS and v is not None}
    generic = {k: v for k, v in kept.items() if k in GENERIC_KEYS}
    specific = {k: v for k, v in kept.items() if k not in GENERIC_KEYS}
    converted: dict[str, Any] = executor._convert_parameters(generic)
    return {**converted, **specific}


def slurm_executor(params: dict[str, Any], dry_run: bool = False) -> Any:
    """A submitit SlurmExecutor with this group's parameters (``dry_run``: one that only
    writes scripts, usable where SLURM is not installed)."""
    from submitit.slurm.slurm import SlurmExecutor

    cls = SlurmExecutor
    if dry_run:

        class ScriptOnly(SlurmExecutor):
            @classmethod
            def affinity(cls) -> int:
                return 2  # the srun check: this executor writes scripts, it submits nothing

        cls = ScriptOnly
    ex = cls(folder=params["submitit_folder"], max_num_timeout=params["max_num_timeout"])
    ex.update_parameters(**executor_parameters(ex, params))
    return ex


def sbatch_script(params: dict[str, Any], count: int, dry_run: bool = False) -> str:
    """The sbatch script submitit writes for an array of ``count`` jobs of these parameters."""
    ex = slurm_executor(params, dry_run=dry_run)
    if count > 1:
        ex.parameters["map_count"] = count
        ex.parameters["array_parallelism"] = params["array_parallelism"]
    text: str = ex._make_submission_file_text(ex._submitit_command_str, "plan")
    return text


def write_scripts(groups: Sequence[Group], folder: Path, dry_run: bool) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for g in groups:
        g.script = folder / f"array_{g.number}.sbatch"
        g.script.write_text(sbatch_script(g.params, len(g.jobs), dry_run=dry_run))


def test_only(groups: Sequence[Group]) -> list[str]:
    """What ``sbatch --test-only`` says against each group's script; empty when all would run."""
    problems = []
    for g in groups:
        assert g.script is not None
        done = subprocess.run(
            ["sbatch", "--test-only", str(g.script)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if done.returncode != 0:
            said = " ".join((done.stderr or done.stdout).split()) or f"exit {done.returncode}"
            jobs = ", ".join(str(j.index) for j in g.jobs)
            problems.append(
                f"SLURM refuses job array {g.number} (job(s) {jobs}; {g.resources()}): {said}. "
                "Fix: a tier (or hydra.launcher.* values) this cluster has."
            )
    return problems


def squeue_states(job_ids: Sequence[str]) -> dict[str, dict[str, str]]:
    """What squeue says of these jobs (it works without accounting, for recent jobs too)."""
    base = sorted({j.split("_")[0] for j in job_ids})
    cmd = ["squeue", "-h", "-t", "all", "-r", "-o", "%i|%T", "-j", ",".join(base)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return {}
    out = {}
    for line in done.stdout.splitlines():
        job_id, _, state = line.partition("|")
        if state:
            out[job_id.strip()] = {"state": state.strip(), "exit_code": "", "elapsed": ""}
    return out


def scancel(job_ids: Sequence[str]) -> None:
    if job_ids:
        subprocess.run(["scancel", *job_ids], capture_output=True, timeout=60, check=False)


def task_ids(job_id: str) -> list[str]:
    """The ids sacct's ``JobID`` stands for: ``12_[3-5,7%2]`` (the array's own record, which
    holds its tasks not started yet) is 12_3, 12_4, 12_5 and 12_7; anything else is itself."""
    match = re.fullmatch(r"(\d+)_\[([\d,\-]+)(?:%\d+)?\]", job_id)
    if match is None:
        return [job_id]
    out = []
    for part in match[2].split(","):
        lo, _, hi = part.partition("-")
        out += [f"{match[1]}_{i}" for i in range(int(lo), int(hi or lo) + 1)]
    return out


def sacct_states(job_ids: Sequence[str]) -> dict[str, dict[str, str]]:
    """State, exit code and elapsed time of each job (array tasks as ``<id>_<index>``)."""
    if not job_ids:
        return {}
    base = sorted({j.split("_")[0] for j in job_ids})
    fields = "JobID,State,ExitCode,DerivedExitCode,Elapsed"
    cmd = ["sacct", "-X", "-P", "-n", "-o", fields, "-j", ",".join(base)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        log.warning("sacct failed (%s); job states may be late", err)
        return {}
    out: dict[str, dict[str, str]] = {}
    pending: dict[str, dict[str, str]] = {}
    for line in done.stdout.splitlines():
        parts = line.split("|")
        if len(parts) == 5:
            job_id, state, code, derived, elapsed = parts
            info = {"state": state, "exit_code": code, "derived": derived, "elapsed": elapsed}
            for task in task_ids(job_id):
                (out if task == job_id else pending)[task] = info
    # The array's own record (``12_[0-2%2]``) names every index, started ones too: it speaks
    # only for the tasks that have no record of their own.
    return {**pending, **out}


def step_exit_codes(job_id: str) -> list[str]:
    """The ExitCode of each step of one job (``<id>.batch``, ``<id>.0``, ...): a task killed by a
    signal shows there (``0:9``) while the job's own DerivedExitCode may not have caught up,
    and srun's exit code alone (``9:0``) does not say it was a signal."""
    cmd = ["sacct", "-P", "-n", "-o", "JobID,ExitCode", "-j", job_id]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return []
    rows = [line.split("|") for line in done.stdout.splitlines()]
    return [code for step, code in (r for r in rows if len(r) == 2) if "." in step]


def job_states(job_ids: Sequence[str]) -> dict[str, dict[str, str]]:
    """What SLURM says of each job: sacct's account, else squeue's (which answers without
    accounting, for recently ended jobs too). A job neither knows is missing."""
    states = sacct_states(job_ids)
    missing = [i for i in job_ids if i not in states]
    if missing:
        states.update(squeue_states(missing))
    return states


def live_state(state: str) -> bool:
    return state in PENDING_STATES or state in ("RUNNING", "COMPLETING", "CONFIGURING")


def slurm_detail(state: str, exit_codes: Sequence[str], elapsed: str) -> str:
    """SLURM's account of a job that left no result. ``exit_codes``: sacct's ExitCode and
    DerivedExitCode (``<code>:<signal>``; the derived one is its steps' worst, where a task
    killed by a signal shows)."""
    pairs = [c.partition(":") for c in exit_codes if c]
    code = next((c for c, _, _ in pairs if c not in ("", "0")), "")
    sig = next((g for _, _, g in pairs if g not in ("", "0")), "")
    after = f" after {elapsed}" if elapsed else ""
    if state == "TIMEOUT":
        return f"ran past its time limit{after} and was stopped by SLURM"
    if state == "CANCELLED":
        return "cancelled"
    if state == "OUT_OF_MEMORY":
        return f"ran out of memory{after}"
    if sig:
        try:
            name = signal.Signals(int(sig)).name
        except ValueError:
            name = f"signal {sig}"
        return f"killed by {name}{after}, without a result"
    if code:
        return f"exited with code {code}{after}, without a result"
    return f"ended ({state}){after} without a result"
