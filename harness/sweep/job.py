"""What runs inside each job of a sweep, around Hydra's task."""

from __future__ import annotations

import logging
import signal
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
    """
    import submitit
    from hydra.core.singleton import Singleton
    from hydra.core.utils import run_job, setup_globals
    from omegaconf import open_dict

    env = submitit.JobEnvironment()
    if env.global_rank > 0:
        return join_engine(env)
    guard_time_limit_signal()
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
    spans several nodes (``harness.engines.cluster.join_slurm_head``: a Ray worker node on this
    node, until the head goes away). On one node (``tasks_per_node`` > 1), or without Ray or
    that module, there is nothing to join: the task says so and ends, leaving rank 0 the job.
    """
    try:
        from harness.engines.cluster import join_slurm_head, ray_installed
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
