"""The sweep's jobs once handed to submitit: submitted (to SLURM, or started as local processes
within each group's ``array_parallelism``), waited for, cancelled, and what became of each."""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from harness.record.rundir import RunDirectory
from harness.sweep.outcome import (
    JobOutcome,
    dataset_counts,
    failed_datasets,
    last_error_line,
    reused_datasets,
    tracking_outcome,
)
from harness.sweep.packing import Grant, Need, NodePool
from harness.sweep.plan import Group, SweepJob
from harness.sweep.slurm import (
    GENERIC_KEYS,
    OWN_KEYS,
    PENDING_STATES,
    job_states,
    live_state,
    scancel,
    slurm_detail,
    slurm_executor,
    squeue_states,
    step_exit_codes,
)

DONE_GRACE_S = 5.0
"""How long a job SLURM reports ended may take to show its result file (shared file systems)."""


@dataclass
class Submitted:
    """A job handed to submitit, and what is known of it so far."""

    job: SweepJob
    handle: Any
    """submitit's Job (for a multi-task job, the handle of task 0 is used for results)."""
    state: str = "PENDING"
    ended_at: float | None = None
    outcome: JobOutcome | None = None
    result: Any = None
    """The job's Hydra JobReturn, when it came back."""
    grant: Grant | None = None
    """The share of this node a local job was given (``harness.sweep.packing``)."""
    started_at: float | None = None
    """When a local job was started, seconds since the epoch (SLURM keeps its own)."""
    finished_at: float | None = None
    """When a local job was seen ended, seconds since the epoch."""


def say(text: str, err: bool = False) -> None:
    """A line of the sweep's console, masked (a swept URI may hold a password)."""
    from harness.secrets import mask

    print(mask(text), file=sys.stderr if err else sys.stdout, flush=True)


def catch_sigterm() -> Any:
    """SIGTERM ends the sweep as Ctrl-C does (``harness.errors.Terminated``, exit code 143)."""
    from harness.errors import raise_terminated as handler

    try:
        return signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        return signal.getsignal(signal.SIGTERM)


def _job_args(job: SweepJob, state: Any) -> tuple[Any, ...]:
    """What submitit pickles for the job, beside the launcher: its overrides with every secret
    read from the environment (``harness.sweep.secret_env``)."""
    overrides = job.sealed or job.overrides
    return (overrides, "hydra.sweep.dir", job.index, f"job_id_for_{job.index}", state)


def submit_group(launcher: Any, group: Group, state: Any) -> list[Submitted]:
    ex = slurm_executor(group.params)
    ex.update_parameters(array_parallelism=group.params["array_parallelism"])
    args = [_job_args(j, state) for j in group.jobs]
    handles = ex.map_array(launcher, *zip(*args, strict=True))
    out = []
    for job, handle in zip(group.jobs, handles, strict=True):
        say(f"submitted job {job.index} as SLURM job {handle.job_id}")
        out.append(Submitted(job=job, handle=handle))
    return out


def _local_executor(params: dict[str, Any]) -> Any:
    """submitit's local executor with these parameters (checked and named as its AutoExecutor
    does), starting each job apart from the terminal (``harness.sweep.local``)."""
    import submitit

    from harness.sweep.local import SweepLocalExecutor

    auto = submitit.AutoExecutor(
        cluster="local",
        folder=params["submitit_folder"],
        local_max_num_timeout=params["max_num_timeout"],
    )
    kept = {k: v for k, v in params.items() if k not in OWN_KEYS and v is not None}
    auto.update_parameters(**{k if k in GENERIC_KEYS else f"local_{k}": v for k, v in kept.items()})
    ex = SweepLocalExecutor(params["submitit_folder"], max_num_timeout=params["max_num_timeout"])
    ex.update_parameters(**auto._executor.parameters)
    return ex


def start_local(
    launcher: Any,
    groups: Sequence[Group],
    submitted: Sequence[Submitted],
    state: Any,
    pool: NodePool,
) -> None:
    """Start every local job whose share of the node is free (``pool``), in the sweep's order,
    while its group has fewer than its ``array_parallelism`` (if set) running.

    A job that does not fit yet waits, and a later one that fits starts before it: the node is
    kept busy, and the waiting job starts at the latest once every job before it has ended.
    """
    by_index = {s.job.index: s for s in submitted}
    for g in groups:
        cap = g.params.get("array_parallelism") or len(g.jobs)
        running = sum(1 for j in g.jobs if _running_local(by_index[j.index]))
        for job in g.jobs:
            s = by_index[job.index]
            if s.handle is not None or running >= cap:
                continue
            grant = pool.take(Need.of(g.params))
            if grant is None:
                continue
            ex = _local_executor(g.params)
            ex.grant = grant
            s.handle = ex.submit(launcher, *_job_args(job, state))
            s.grant, s.started_at, s.state = grant, time.time(), "RUNNING"
            running += 1
            say(f"started job {job.index} as local process {s.handle.job_id}: {grant.describe()}")


def _running_local(s: Submitted) -> bool:
    return s.handle is not None and s.finished_at is None


def release_local(s: Submitted, pool: NodePool | None) -> None:
    """A local job has ended: when, and its share of the node is free for the next."""
    if s.finished_at is not None:
        return
    s.finished_at = time.time()
    if s.grant is not None and pool is not None:
        pool.give_back(s.grant)


def _ended_local(s: Submitted) -> bool:
    return s.handle is not None and bool(s.handle.done())


def _task0(handle: Any) -> Any:
    return handle.task(0) if handle.num_tasks > 1 else handle


def _poll(live: Sequence[Submitted], started: float) -> None:
    """Every live job's SLURM state: sacct's, else squeue's (which also knows jobs that ended
    a few minutes ago); a job neither knows two minutes after submission has ended."""
    states = job_states([s.handle.job_id for s in live if s.handle is not None])
    for s in live:
        info = states.get(s.handle.job_id)
        if info is None:
            if time.monotonic() - started > 120 and s.state in PENDING_STATES:
                s.state = "ENDED"
            continue
        new = info["state"].split()[0]
        if new == "RUNNING" and s.state != "RUNNING":
            say(f"job {s.job.index} ({s.job.model}/{s.job.strategy}) running")
        if new in PENDING_STATES and s.state == "RUNNING":
            say(f"job {s.job.index} requeued ({new}): it resumes from its stored datasets")
        s.state = new


def wait_all(
    launcher: Any,
    submitted: Sequence[Submitted],
    groups: Sequence[Group],
    kind: str,
    state: Any,
    pool: NodePool | None = None,
) -> None:
    """Wait until every job has ended, printing each job's start and end.

    A job has ended when its result file is there, or when SLURM says it ended (its state seen
    again, fresh, after DONE_GRACE_S, so that a requeue or a slow file system is not taken for
    the end).
    """
    poll_s = float(groups[0].params.get("poll_s") or 10.0) if groups else 10.0
    started = last_poll = time.monotonic()
    if kind == "slurm":
        _poll(submitted, started)
    while True:
        now = time.monotonic()
        live = [s for s in submitted if s.outcome is None]
        if not live:
            return
        if kind == "slurm" and now - last_poll >= poll_s:
            last_poll = now
            _poll(live, started)
        for s in live:
            if s.handle is None:
                continue
            if kind != "slurm":
                if _ended_local(s):
                    release_local(s, pool)
                    s.outcome = outcome_of(s, kind, False)
                    _announce(s)
                continue
            if _task0(s.handle).paths.result_pickle.exists():
                s.outcome = outcome_of(s, kind, False)
                _announce(s)
            elif live_state(s.state):
                s.ended_at = None
            elif s.ended_at is None:
                s.ended_at = now
            elif now - s.ended_at >= DONE_GRACE_S:
                _poll([s], started)
                if live_state(s.state):
                    s.ended_at = None
                    continue
                s.outcome = outcome_of(s, kind, False)
                _announce(s)
        if kind != "slurm" and pool is not None:
            start_local(launcher, groups, submitted, state, pool)
        time.sleep(0.25 if kind != "slurm" else 1.0)


def _announce(s: Submitted) -> None:
    o = s.outcome
    assert o is not None
    counts = (
        "" if o.datasets_ok is None else f", datasets ok/failed {o.datasets_ok}/{o.datasets_failed}"
    )
    say(f"job {o.index} ({o.model}/{o.strategy}) {o.state}{counts}")


def cancel(submitted: Sequence[Submitted], kind: str, sig: int = signal.SIGINT) -> None:
    """Cancel every job: ``scancel`` on SLURM; a local job gets ``sig`` (SIGINT: what a
    terminal's Ctrl-C sends a run) in each of its processes (``harness.sweep.local``)."""
    if kind == "slurm":
        scancel(sorted({s.handle.job_id.split("_")[0] for s in submitted if s.handle is not None}))
        return
    from harness.sweep.local import signal_job

    for s in submitted:
        if s.handle is not None and not s.handle.done():
            signal_job(s.handle, sig)


def settle(submitted: Sequence[Submitted], kind: str, limit_s: float = 60.0) -> None:
    """Wait (at most ``limit_s``) for cancelled jobs to be gone: reported ended by sacct, and no
    longer in squeue (a job being killed shows there as COMPLETING for SLURM's KillWait). A local
    job still there then is killed (SIGKILL)."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if kind != "slurm":
            if all(s.handle is None or s.handle.done() for s in submitted):
                return
        else:
            ids = [s.handle.job_id for s in submitted if s.handle is not None]
            states = job_states(ids)
            for s in submitted:
                if s.handle is not None and s.handle.job_id in states:
                    s.state = states[s.handle.job_id]["state"].split()[0]
            if all(s.handle is None or not live_state(s.state) for s in submitted) and not any(
                live_state(v["state"]) for v in squeue_states(ids).values()
            ):
                return
        time.sleep(1.0)
    if kind != "slurm":
        _kill_local(submitted)


def _kill_local(submitted: Sequence[Submitted]) -> None:
    """SIGKILL to every local job still running."""
    left = [s for s in submitted if s.handle is not None and not s.handle.done()]
    if left:
        say(f"{len(left)} job(s) still running after Ctrl-C: killing them (SIGKILL)", err=True)
        cancel(left, "local", signal.SIGKILL)


def outcome_of(s: Submitted, kind: str, interrupted: bool) -> JobOutcome:
    """What became of one job: from its result when it came back, else from SLURM's state."""
    if s.outcome is not None:
        return s.outcome
    job = s.job
    out = JobOutcome(
        index=job.index,
        model=job.model,
        strategy=job.strategy,
        tier=job.tier,
        state="CANCELLED" if interrupted else "UNKNOWN",
        datasets_ok=None,
        datasets_failed=None,
        run_dir=str(job.run_dir),
        job_id="-" if s.handle is None else str(s.handle.job_id),
    )
    out.datasets_ok, out.datasets_failed = dataset_counts(job.run_dir)
    out.datasets_reused = reused_datasets(job.run_dir)
    out.tracking = tracking_outcome(job.run_dir)
    if s.grant is not None:
        out.given = s.grant.to_dict()
        out.started_at, out.ended_at = s.started_at, s.finished_at
    if s.handle is None:
        out.detail = "never started"
        return out
    task = _task0(s.handle)
    out.log = str(task.paths.stderr)
    if task.paths.result_pickle.exists():
        _from_result(s, task, out)
        return out
    if kind == "slurm":
        info = job_states([s.handle.job_id]).get(s.handle.job_id, {})
        state = (info.get("state") or s.state or "UNKNOWN").split()[0]
        out.state = state
        codes = [info.get("exit_code", ""), info.get("derived", "")]
        if state == "FAILED":  # a task killed by a signal may show only in its step's record
            codes += step_exit_codes(s.handle.job_id)
        out.detail = slurm_detail(state, codes, info.get("elapsed", ""))
    elif interrupted:
        out.detail = "cancelled by Ctrl-C"
    else:
        out.state = "FAILED"
        out.detail = "ended without a result (killed?)"
    return out


def _from_result(s: Submitted, task: Any, out: JobOutcome) -> None:
    from hydra.core.utils import JobStatus

    try:
        ret = task.result()
    except Exception as err:  # the job raised outside Hydra's run_job, or submitit gave up
        text = str(err)
        out.state = "TIMEOUT" if "timed-out too many times" in text else "FAILED"
        out.detail = last_error_line(text)
        return
    s.result = ret
    if ret is None:  # a rank > 0 task, or nothing to report
        out.state = "COMPLETED"
        return
    if ret.status != JobStatus.COMPLETED:  # the task raised: Hydra kept the exception
        raised = ret._return_value
        message = str(raised).strip().splitlines()
        out.state = "FAILED"
        out.detail = f"raised {type(raised).__name__}: {message[0] if message else ''}"
        return
    code = ret.return_value
    if isinstance(code, int) and code != 0:
        out.state = "FAILED"
        out.log = str(RunDirectory(s.job.run_dir).log)
        failed = failed_datasets(s.job.run_dir)
        if failed:
            out.detail = f"{len(failed)} dataset(s) failed: {'; '.join(failed)}"
        elif code == 2:
            out.detail = "refused by the job itself (exit 2): its log says why"
        else:
            out.detail = f"exit {code}"
        return
    out.state = "COMPLETED"
