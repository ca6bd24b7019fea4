"""Sweeps through submitit: every job planned first, one job array per resource shape, one outcome.

``python -m harness -m ... hydra/launcher=slurm`` (or ``submitit_local``) hands the sweep to the
launcher plugin in ``plugins/hydra_plugins/harness_launcher``, which calls
:func:`harness.sweep.launch.launch`:

1. every job's config is composed and planned before anything is submitted (``plan``); if any job
   cannot run, the whole sweep is refused with every job's problems and nothing is submitted;
2. each job's resources come from its plan and its tier (``plan.job_resources``), any launcher
   key set in the config or on the command line winning; jobs of the same resources form one
   group, submitted as one job array (``plan_only=true`` prints the groups and writes their
   sbatch scripts instead);
3. every group's sbatch script is checked with ``sbatch --test-only`` before the first group is
   submitted (``slurm``); a submission that still fails cancels the groups already submitted;
4. the launcher waits for every job, reading SLURM's own state (``sacct``, else ``squeue``) for
   jobs that ended without a result (SIGKILL, time limit, node failure), then prints one table,
   writes it to the sweep directory (``outcome``), and records the exit code that
   :func:`exit_code` returns and ``harness.app.main`` exits with. Ctrl-C (or SIGTERM) cancels
   every job it submitted.

Secrets go to the jobs through their environment, never through the pickles submitit writes in
the sweep directory (``secret_env``). Local jobs run in sessions of their own: a terminal's
Ctrl-C reaches the sweep, which sends each job one SIGINT, as Ctrl-C reaches a run (``local``).

In the job (``job``): only rank 0 runs the evaluation, and submitit's time-limit signal is kept
from being taken for a dataset's failure. A requeued job starts again and resumes from the result
store (``harness.record.store.ResultStore``): stored datasets are not evaluated again.

Checked before submitting: the config's keys and rules, the model's facts, datasets and task
folders, where the weights are (real sweeps), and the plan's fit on its tier. Checked in the job,
on the node that runs it: that node's GPUs and the engine installed there.

This module stays light: ``harness.app.main`` imports it after every run.
"""

from __future__ import annotations

from collections.abc import Sequence

_exit_code: int | None = None


def argv_problems(argv: Sequence[str]) -> list[str]:
    """Command lines Hydra would end with a traceback: ``-m`` with ``--cfg`` or ``--info``."""
    sweep = any(a in ("-m", "--multirun") for a in argv)
    prints = [a for a in argv if a in ("-c", "--cfg", "--info") or a.startswith("--info=")]
    if not (sweep and prints):
        return []
    return [
        f"{prints[0]} prints one composed config and cannot go with -m (a sweep). Fix: to see "
        "each job of the sweep, its plan and the job arrays it would be submitted as, add "
        "plan_only=true; to see one job's config, drop -m and keep that job's values."
    ]


def record_exit(code: int) -> None:
    """Remember the sweep's exit code (the worst one recorded wins)."""
    global _exit_code
    _exit_code = max(code, _exit_code or 0)


def exit_code() -> int | None:
    """The exit code a sweep of this process recorded; None when there was none."""
    return _exit_code


def reset_exit_code() -> None:
    """Forget the recorded exit code (tests that run several sweeps in one process)."""
    global _exit_code
    _exit_code = None
