"""The launchers: hydra-submitit's, with ``launch()`` replaced by ``harness.sweep.launch.launch``
(plan every job, one array per resource shape, one outcome table) and each job run by
``harness.sweep.job.run_task`` (rank 0 only; submitit's time-limit signal made safe). Their
``checkpoint()`` is hydra-submitit's: a requeued job runs the same call again.

submitit and harness are imported lazily: Hydra imports every plugin module at start-up.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hydra.core.utils import JobReturn
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import LocalLauncher, SlurmLauncher


def _compose_each_job_once() -> None:
    """Hydra's basic sweeper composes every job once before handing the batch to the launcher
    (``validate_batch_is_legal``), and ``launch()`` composes each again to plan it: twice the
    work (0.4 s of CPU a job). ``launch()`` refuses a job that does not compose, with its
    message, before anything is submitted, so the sweeper's check is skipped."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    BasicSweeper.validate_batch_is_legal = lambda self, batch: None  # type: ignore[method-assign]


class HarnessSlurmLauncher(SlurmLauncher):
    def setup(self, *args: Any, **kwargs: Any) -> None:
        super().setup(*args, **kwargs)
        _compose_each_job_once()

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        from harness.sweep.launch import launch

        return launch(self, job_overrides, initial_job_idx, kind="slurm")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from harness.sweep.job import run_task

        return run_task(self, *args, **kwargs)


class HarnessLocalLauncher(LocalLauncher):
    def setup(self, *args: Any, **kwargs: Any) -> None:
        super().setup(*args, **kwargs)
        _compose_each_job_once()

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        from harness.sweep.launch import launch

        return launch(self, job_overrides, initial_job_idx, kind="local")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from harness.sweep.job import run_task

        return run_task(self, *args, **kwargs)
