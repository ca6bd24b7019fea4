"""What runs inside each job of a sweep, around Hydra's task."""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import Sequence
from typing import Any

log = logging.getLogger(__name__)


def run_task(
    launcher: Any,
    sweep_overrides: Sequence[str],
    job_dir_key: str,
    job_num: int,
    job_id: str,
    singleton_state: Any,
) -> Any:
    """One job of the sweep, in its SLURM job (or local process): hydra-submitit 1.2.0's
    ``BaseSubmititLauncher.__call__``, run by rank 0 only, with two changes.

    The time-limit signal is guarded first (:func:`guard_time_limit_signal`). And after Hydra's
    singletons are restored, which makes Hydra scan its plugins again (and hydra-submitit register
    its own ``submitit_local`` config again), that registration is dropped, as it is before the
    sweep is composed (:func:`drop_stock_local_config`).

    The other ranks of a multi-node job (one task per node) are for the distributed engine to
    join (:func:`join_engine`).

    What it returns, or the error it raises, is masked before submitit pickles it into the sweep
    directory (:func:`masked_return`, :func:`masked_failure`). Ctrl-C (a local sweep sends each
    job one SIGINT, ``harness.sweep.local``) ends it as it ends a run: the run is marked KILLED
    by the run itself, this says so in one line and the task exits 130.
    """
    try:
        return masked_return(
            _run_task(launcher, sweep_overrides, job_dir_key, job_num, job_id, singleton_state)
        )
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # leaving: a second Ctrl-C changes nothing
        print(
            "interrupted (Ctrl-C): the run is marked KILLED; the same command resumes it "
            "(datasets already stored are not evaluated again)",
            file=sys.stderr,
            flush=True,
        )
        sys.exit(130)
    except Exception as err:
        masked = masked_failure(err)
        if masked is err:
            raise
        raise masked from None


def _run_task(
    launcher: Any,
    sweep_overrides: Sequence[str],
    job_dir_key: str,
    job_num: int,
    job_id: str,
    singleton_state: Any,
) -> Any:
    import submitit
    from hydra.core.singleton import Singleton
    from hydra.core.utils import run_job, setup_globals
    from omegaconf import open_dict

    env = submitit.JobEnvironment()
    if env.global_rank > 0:
        return join_engine(env)
    guard_time_limit_signal()
    say_given(job_num)
    Singleton.set_state(singleton_state)
    drop_stock_local_config()
    setup_globals()
    config = launcher.hydra_context.config_loader.load_sweep_config(
        launcher.config, list(sweep_overrides)
    )
    with open_dict(config.hydra.job):
        config.hydra.job.id = env.job_id
        config.hydra.job.num = job_num
    return run_job(
        hydra_context=launcher.hydra_context,
        task_function=launcher.task_function,
        config=config,
        job_dir_key=job_dir_key,
        job_subdir_key="hydra.sweep.subdir",
    )


def say_given(job_num: int) -> None:
    """One line in the job's log: what it was given to run on, as the job itself sees it (its
    GPUs, its cores' affinity, its memory); summary.json's ``resources`` holds the same."""
    from harness.machine.node import given_resources
    from harness.sweep.packing import cpu_ranges

    given = given_resources()
    gpus = "all" if given["gpus"] is None else ",".join(given["gpus"]) or "none"
    print(
        f"job {job_num} on {given['host']} was given: GPUs {gpus}; CPUs "
        f"{cpu_ranges(given['cpus'])}; {given['host_memory_gib']:g} GiB host memory",
        file=sys.stderr,
        flush=True,
    )


def masked_failure(err: Exception) -> Exception:
    """``err`` as it may be pickled into the sweep directory (submitit writes the traceback of a
    job that raised): itself when its traceback holds no secret, else a RuntimeError with the
    traceback masked."""
    import traceback

    from harness.secrets import mask

    text = "".join(traceback.format_exception(err))
    return err if mask(text) == text else RuntimeError(mask(text))


def masked_return(ret: Any) -> Any:
    """Hydra's JobReturn of the task, as it may be pickled into the sweep directory: its
    overrides, configs and error masked (the job's overrides hold secrets as
    ``${oc.env:HARNESS_SECRET_<n>}``, but a config or an error may hold one resolved)."""
    from hydra.core.utils import JobStatus
    from omegaconf import DictConfig

    from harness.secrets import mask
    from harness.sweep.secret_env import job_secrets, leaks, mask_config

    if ret is None:
        return ret
    secrets = job_secrets()
    ret.overrides = [mask(o) for o in ret.overrides or []]
    for name in ("cfg", "hydra_cfg"):
        cfg = getattr(ret, name, None)
        if isinstance(cfg, DictConfig) and leaks(cfg, secrets):
            import copy

            cfg = copy.deepcopy(cfg)
            mask_config(cfg)
            setattr(ret, name, cfg if not leaks(cfg, secrets) else None)
    if ret.status == JobStatus.FAILED and isinstance(ret._return_value, BaseException):
        error = ret._return_value
        text = f"{type(error).__name__}: {error}"
        if mask(text) != text or leaks(error, secrets):
            ret.return_value = RuntimeError(mask(text))
    return ret


def drop_stock_local_config() -> None:
    """Make ``hydra/launcher=submitit_local`` mean conf/hydra/launcher/submitit_local.yaml alone.

    hydra-submitit registers a structured config of the same name; with both, Hydra merges the
    file into it (its deprecated "automatic schema matching"): a warning on every run, and a type
    error on the file's null resources. The file's own schema is ``harness_local``.
    """
    from hydra.core.config_store import ConfigStore

    launchers = ConfigStore.instance().repo.get("hydra", {}).get("launcher", {})
    launchers.pop("submitit_local.yaml", None)


def join_engine(env: Any) -> None:
    """What a rank > 0 task of a job does: join the Ray cluster its rank 0 starts, when the job
    spans several nodes (``harness.engines.ray.cluster.join_slurm_head``: a Ray worker node on this
    node, until the head goes away). On one node (``tasks_per_node`` > 1), or without Ray or
    that module, there is nothing to join: the task says so and ends, leaving rank 0 the job.
    """
    try:
        from harness.engines.ray.cluster import join_slurm_head, ray_installed
        from harness.machine.slurm import slurm_allocation
    except ImportError:  # the distributed engine is not part of this version
        alloc, ready = None, False
    else:
        alloc, ready = slurm_allocation(), ray_installed()
    if alloc is None or alloc.node_rank == 0 or not ready:
        why = "Ray is not installed" if alloc is not None and not ready else "it runs on one node"
        log.warning(
            "rank %s of %s on %s: no distributed engine to join (%s); rank 0 runs the job",
            env.global_rank,
            env.num_tasks,
            env.hostname,
            why,
        )
        return
    log.warning("rank %s on %s: joining rank 0's Ray cluster", env.global_rank, env.hostname)
    code = join_slurm_head(alloc)
    if code != 0:
        raise RuntimeError(f"rank {env.global_rank} could not join rank 0's Ray cluster: {code}")


def guard_time_limit_signal() -> None:
    """Keep submitit's "no requeue left" from being taken for a dataset's failure.

    On SLURM's warning signal before the time limit (USR2, ``signal_delay_s`` ahead), submitit
    checkpoints and requeues the job while ``max_num_timeout`` allows; after that it raises an
    exception from the signal handler, in whatever code runs, and the evaluation loop would
    record it as that dataset's failure and go on. Instead the job goes on as it is: it finishes
    if it can, else SLURM stops it at its limit and the sweep reports TIMEOUT.
    """
    from submitit.core.job_environment import JobEnvironment
    from submitit.core.utils import UncompletedJobError

    sig = JobEnvironment._usr_sig()
    original = signal.getsignal(sig)
    if not callable(original):
        return

    def handler(signum: int, frame: Any) -> None:
        try:
            original(signum, frame)
        except UncompletedJobError as err:
            log.warning("%s The job goes on until its time limit.", err)

    signal.signal(sig, handler)
