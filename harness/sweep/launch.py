"""The launcher's ``launch()``: plan, group, submit, wait, report (see ``harness.sweep``)."""

from __future__ import annotations

import copy
import os
import signal
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from harness.sweep import record_exit
from harness.sweep.outcome import format_outcomes, tracking_lost, write_outcomes
from harness.sweep.packing import NodePool
from harness.sweep.plan import (
    Group,
    SweepJob,
    format_groups,
    format_refusal,
    group_jobs,
    job_config,
    plan_job,
    prepare_tracking,
    swept,
    write_plans,
)
from harness.sweep.secret_env import (
    job_secrets,
    leaks,
    sealed_master,
    sealed_overrides,
    secret_environment,
)
from harness.sweep.slurm import test_only, write_scripts
from harness.sweep.submitted import (
    Submitted,
    cancel,
    catch_sigterm,
    outcome_of,
    say,
    settle,
    start_local,
    submit_group,
    wait_all,
)

TRACKING_LOST_EXIT = 3
"""A sweep's exit code when every job completed but MLflow lost some of them (replay logs them
from their run directories); failures (1) and refusals (2) win over it."""


def launch(
    launcher: Any, job_overrides: Sequence[Sequence[str]], initial_job_idx: int, kind: str
) -> list[Any]:
    """The sweep of ``job_overrides`` through ``launcher`` (a harness launcher plugin instance):
    plan, group, submit, wait, report. Returns one Hydra JobReturn per job, in order."""
    assert launcher.config is not None and launcher.hydra_context is not None
    sweep_dir = Path(str(launcher.config.hydra.sweep.dir)).resolve()
    sweep_dir.mkdir(parents=True, exist_ok=True)
    from harness.record.rundir import mask_files

    mask_files(sweep_dir, "multirun.yaml")  # Hydra wrote the sweep's overrides as typed
    jobs = plan_jobs(launcher, job_overrides, initial_job_idx, kind, sweep_dir)
    secrets: dict[str, str] = {}  # secret -> the jobs' environment variable that holds it
    seal_jobs(jobs, secrets)
    refused = [j for j in jobs if j.problems]
    names = swept(jobs)
    if bool(launcher.config.get("plan_only", False)):
        groups = group_jobs([j for j in jobs if not j.problems])
        if kind == "slurm":
            write_scripts(groups, sweep_dir / "sbatch", dry_run=True)
        write_plans(jobs)
        say(format_groups(groups, kind, names, plan_only=True))
        if refused:
            say(format_refusal(jobs).replace("Nothing was submitted. ", ""), err=True)
        say("plan_only=true: nothing submitted")
        codes = [plan_only_code(j) for j in jobs]
        record_exit(max(codes, default=0))  # bad input 2, a plan that does not fit 1
        return job_returns(jobs, plan_only_code)
    if refused:
        return refuse(jobs, format_refusal(jobs))
    groups = group_jobs(jobs)
    if kind == "slurm":
        write_scripts(groups, sweep_dir / ".submitit" / "test-only", dry_run=False)
        problems = test_only(groups)
        if problems:
            return refuse(jobs, format_refusal(jobs, problems))
    from hydra.core.singleton import Singleton

    state = Singleton.get_state()
    sealed, problems = seal_launcher(launcher, jobs, state, secrets)
    if problems:
        return refuse(jobs, format_refusal(jobs, problems))
    say(format_groups(groups, kind, names))
    prepare_tracking(jobs)
    with secret_environment(secrets):
        submitted, interrupted = submit_and_wait(sealed, groups, kind, state)
    if submitted is None:
        return job_returns(jobs, lambda j: 2)
    return report(jobs, submitted, kind, interrupted, sweep_dir)


def plan_jobs(
    launcher: Any,
    job_overrides: Sequence[Sequence[str]],
    initial_job_idx: int,
    kind: str,
    sweep_dir: Path,
) -> list[SweepJob]:
    """Every job composed and planned on its own; one that does not compose is refused."""
    loader = launcher.hydra_context.config_loader
    jobs = []
    for i, overrides in enumerate(job_overrides):
        index = initial_job_idx + i
        try:
            cfg = job_config(loader, launcher.config, overrides, index)
        except Exception as err:  # Hydra composition: an error a user can fix, shown plainly
            job = SweepJob(index=index, overrides=list(overrides), run_dir=sweep_dir)
            job.problems = [f"the configuration does not compose: {err}"]
            job.bad_input = True
            jobs.append(job)
            continue
        jobs.append(plan_job(cfg, index, overrides, kind))
    return jobs


def plan_only_code(job: SweepJob) -> int:
    """A plan-only job's exit code, as a plan-only run's: 0 it fits, 1 it does not, 2 bad input."""
    return (2 if job.bad_input else 1) if job.problems else 0


def seal_jobs(jobs: Sequence[SweepJob], secrets: dict[str, str]) -> None:
    """Each job's overrides as submitted (``SweepJob.sealed``): every secret read from the
    jobs' environment (``harness.sweep.secret_env``); one that cannot be is the job's problem."""
    for job in jobs:
        job.sealed, problems = sealed_overrides(job.overrides, secrets)
        if problems:
            job.problems += problems
            job.bad_input = True


def seal_launcher(
    launcher: Any, jobs: Sequence[SweepJob], state: Any, secrets: dict[str, str]
) -> tuple[Any, list[str]]:
    """The launcher as submitit pickles it for every job: a copy whose master config holds no
    secret (``sealed_master``); and what stops the sweep: a Hydra override that cannot be
    sealed, or any secret still found in what would be pickled (the launcher, Hydra's state,
    each job's overrides)."""
    master, problems = sealed_master(launcher.config, secrets)
    if problems:
        return launcher, problems
    sealed = copy.copy(launcher)
    sealed.config = master
    known = job_secrets(secrets)
    leaked = leaks((sealed, state), known) + leaks([j.sealed for j in jobs], known)
    if leaked:
        return launcher, [
            f"{len(set(leaked))} secret(s) would still be written into submitit's pickles in "
            "the sweep directory. Fix: give the secret to the jobs through the environment "
            "(MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD, ${oc.env:NAME} in the config)."
        ]
    return sealed, []


def job_returns(jobs: Sequence[SweepJob], code_of: Callable[[SweepJob], int]) -> list[Any]:
    """One Hydra JobReturn per job that never ran, with ``code_of(job)`` as its value."""
    from hydra.core.utils import JobReturn, JobStatus

    out = []
    for job in jobs:
        ret = JobReturn(overrides=job.overrides, working_dir=os.getcwd())
        ret.status = JobStatus.COMPLETED
        ret.return_value = code_of(job)
        out.append(ret)
    return out


def refuse(jobs: Sequence[SweepJob], why: str) -> list[Any]:
    """Submit nothing: say why, exit 2."""
    say(f"error: the sweep was not submitted. {why}", err=True)
    record_exit(2)
    return job_returns(jobs, lambda j: 2)


def submit_and_wait(
    launcher: Any, groups: Sequence[Group], kind: str, state: Any
) -> tuple[list[Submitted] | None, int]:
    """Submit every group and wait for every job; Ctrl-C or SIGTERM cancels them all (local jobs
    are interrupted as Ctrl-C interrupts a run: each ends KILLED). Returns the submitted jobs
    (None when submitting failed: nothing of the sweep runs) and, when the sweep was interrupted,
    its exit code (130 Ctrl-C, 143 SIGTERM; else 0)."""
    from harness.errors import Terminated

    submitted: list[Submitted] = []
    pool: NodePool | None = None
    interrupted = 0
    previous = catch_sigterm()
    try:
        try:
            if kind == "slurm":
                for g in groups:
                    submitted += submit_group(launcher, g, state)
            else:
                pool = NodePool.this_node()
                submitted = [Submitted(job=j, handle=None) for g in groups for j in g.jobs]
                start_local(launcher, groups, submitted, state, pool)
        except KeyboardInterrupt:
            raise
        except Exception as err:  # an sbatch that fails after others were submitted
            cancel(submitted, kind)
            say(
                f"error: submitting the sweep failed ({type(err).__name__}: {err}); the jobs "
                "already submitted were cancelled, so nothing of this sweep runs.",
                err=True,
            )
            record_exit(2)
            return None, 0
        wait_all(launcher, submitted, groups, kind, state, pool)
    except KeyboardInterrupt as err:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not stop the cleanup
        terminated = isinstance(err, Terminated)
        interrupted = Terminated.exit_code if terminated else 130
        how = "SIGTERM" if terminated else "Ctrl-C"
        what = "its SLURM jobs" if kind == "slurm" else "its jobs, each run marked KILLED"
        say(f"interrupted ({how}): cancelling {what} ...", err=True)
        cancel(submitted, kind)
        settle(submitted, kind)
    finally:
        signal.signal(signal.SIGTERM, previous)
        if interrupted:
            signal.signal(signal.SIGINT, signal.default_int_handler)
    return submitted, interrupted


def report(
    jobs: Sequence[SweepJob],
    submitted: Sequence[Submitted],
    kind: str,
    interrupted: int,
    sweep_dir: Path,
) -> list[Any]:
    """The outcome table (printed and written), the sweep's exit code (``interrupted``'s, where
    the sweep was), and each job's return: its own where it came back completed, else 1."""
    from hydra.core.utils import JobReturn, JobStatus

    outcomes = [outcome_of(s, kind, bool(interrupted)) for s in submitted]
    order = {s.job.index: o for s, o in zip(submitted, outcomes, strict=True)}
    ordered = [order[j.index] for j in jobs]
    path = write_outcomes(ordered, sweep_dir)
    say(format_outcomes(ordered, sweep_dir))
    say(f"sweep outcome written to {path}")
    failed = any(o.state != "COMPLETED" for o in ordered)
    lost = tracking_lost(ordered)
    if lost and not failed:
        say(
            f"warning: the sweep evaluated every job, but MLflow does not hold {len(lost)} of "
            f"them (exit {TRACKING_LOST_EXIT}); see the outcome above",
            err=True,
        )
    record_exit(interrupted or (1 if failed else TRACKING_LOST_EXIT if lost else 0))
    by_index = {s.job.index: s for s in submitted}
    out = []
    for job in jobs:
        s = by_index[job.index]
        if s.result is not None and getattr(s.result, "status", None) == JobStatus.COMPLETED:
            out.append(s.result)
            continue
        ret = JobReturn(overrides=job.overrides, working_dir=str(job.run_dir))
        ret.status = JobStatus.COMPLETED
        ret.return_value = 1
        out.append(ret)
    return out
