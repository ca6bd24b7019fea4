"""Local jobs of a sweep (``hydra/launcher=submitit_local``): submitit's local executor, with each
job's controller process started apart from the terminal.

submitit starts a controller process per job (``submitit.local._local``), which starts the job's
tasks and waits for them. Started as submitit starts it, the controller shares the terminal's
process group and its console: a Ctrl-C reaches the sweep, the controllers and the tasks at once,
each controller prints a traceback, and then SIGKILLs its tasks a second after sending them
another SIGINT, in the middle of their ending the run KILLED.

Here the controller is started in a session of its own, its output in
``<job folder>/<job id>_controller.log``, and Ctrl-C left to it (it waits for its tasks to end,
as it does when they end by themselves). A terminal's Ctrl-C reaches the sweep's process alone,
which then sends each job one SIGINT in every process of its session (:func:`signal_job`), as
a terminal's Ctrl-C reaches a single run: the run ends KILLED and the task says so in one line
(``harness.sweep.job.run_task``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from submitit.core import utils
from submitit.local.local import LocalExecutor, LocalJob

from harness.sweep.packing import Grant


class SweepLocalExecutor(LocalExecutor):
    """submitit's LocalExecutor; its jobs' controllers are started by :func:`start_controller`,
    each with the share of the node it was given (``grant``, ``harness.sweep.packing``)."""

    grant: Grant | None = None

    def _submit_command(self, command: str) -> LocalJob[Any]:
        # submitit 1.5.4's LocalExecutor._submit_command, with our start_controller and the
        # job's own GPUs (submitit would give every job GPUs 0..n-1)
        ntasks = self.parameters.get("tasks_per_node", 1)
        n_gpus = self.parameters.get("gpus_per_node", 0)
        visible_gpus = self.parameters.get("visible_gpus", ())
        gpus = range(n_gpus) if visible_gpus == () else visible_gpus[:n_gpus]
        share = {} if self.grant is None else self.grant.environment()
        process = start_controller(
            folder=self.folder,
            command=command,
            tasks_per_node=ntasks,
            cuda_devices=share.pop("CUDA_VISIBLE_DEVICES", ",".join(str(k) for k in gpus)),
            share=share,
            timeout_min=self.parameters.get("timeout_min", 2.0),
            signal_delay_s=self.parameters.get("signal_delay_s", 30),
            stderr_to_stdout=self.parameters.get("stderr_to_stdout", False),
            setup=self.parameters.get("setup", ()),
        )
        return LocalJob(
            folder=self.folder, job_id=str(process.pid), process=process, tasks=list(range(ntasks))
        )


def start_controller(
    folder: Path,
    command: str,
    tasks_per_node: int = 1,
    cuda_devices: str = "",
    timeout_min: float = 5.0,
    signal_delay_s: int = 30,
    stderr_to_stdout: bool = False,
    setup: Any = (),
    share: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """submitit's ``start_controller`` (same environment), in a session of its own, its output in
    the job's folder, running :func:`main` instead of ``submitit.local._local``; ``share`` holds
    the variables that give the job its cores and memory (``Grant.environment``)."""
    import shlex
    import uuid

    env = dict(os.environ)
    env.update(
        SUBMITIT_LOCAL_NTASKS=str(tasks_per_node),
        SUBMITIT_LOCAL_COMMAND=command,
        SUBMITIT_LOCAL_TIMEOUT_S=str(int(60 * timeout_min)),
        SUBMITIT_LOCAL_SIGNAL_DELAY_S=str(int(signal_delay_s)),
        SUBMITIT_LOCAL_NODEID="0",
        SUBMITIT_LOCAL_JOB_NUM_NODES="1",
        SUBMITIT_STDERR_TO_STDOUT="1" if stderr_to_stdout else "",
        SUBMITIT_EXECUTOR="local",
        CUDA_VISIBLE_DEVICES=cuda_devices,
        SUBMITIT_LOCAL_WITH_SHELL="1" if setup else "",
        **(share or {}),
    )
    cmd: Any = [sys.executable, "-m", "harness.sweep.local", str(folder)]
    if setup:
        cmd = " && ".join([*setup, shlex.join(cmd)])
    logs = utils.JobPaths.get_first_id_independent_folder(Path(folder))
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"controller_{uuid.uuid4().hex}.log"
    with log.open("ab") as out:
        process = subprocess.Popen(
            cmd,
            shell=bool(setup),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # the terminal's Ctrl-C reaches the sweep's process only
        )
    job_folder = utils.JobPaths(Path(folder), str(process.pid)).folder
    job_folder.mkdir(parents=True, exist_ok=True)
    log.rename(job_folder / f"{process.pid}_controller.log")
    return process


def signal_job(job: Any, sig: int) -> None:
    """``sig`` to every process of a local job: its controller's session (the controller leaves
    SIGINT to its tasks, which end as a run ends on Ctrl-C)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):  # it ended meanwhile
        os.killpg(int(job.job_id), sig)


def main(folder: str) -> None:
    """A local job's controller: submitit's, which leaves Ctrl-C to the job's tasks. It pins
    itself to the job's cores first (``HARNESS_JOB_CPUS``): every process of the job inherits
    that affinity, and ``tier=local`` plans the job's threads from it."""
    cpus = os.environ.get("HARNESS_JOB_CPUS", "")
    if cpus:
        os.sched_setaffinity(0, {int(c) for c in cpus.split(",")})
    signal.signal(signal.SIGINT, lambda signum, frame: None)  # reset to default in the tasks
    from submitit.local.local import Controller

    Controller(Path(folder)).run()


if __name__ == "__main__":
    main(sys.argv[1])
