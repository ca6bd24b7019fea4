"""A service as a SLURM job (``hydra/launcher=slurm``): vLLM's OpenAI server runs in a job that
submitit submits with the resources a sweep's job of the same plan and tier gets
(``sweep.plan.job_resources``: GPUs and nodes from the plan, CPUs, memory, time limit and partition
from the tier, ``hydra.launcher.*`` over them).

The job (``serve_in_job``) reads its registry entry (mode 0600, on the shared file system: the API
key travels there, never on a command line nor in the sbatch script or submitit's pickle, which
holds the entry's path only), starts the server as its child on the node's address and a free
port, gives it the key by its environment, and writes where it listens (``<id>.where``, JSON, 0600)
for the serve command, which waits for that, then for the server. Whether the service is there is
SLURM's word (``sacct``, ``squeue``), not a pid; stopping it is ``scancel``.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.errors import ConfigError
from harness.record.files import write_private_json
from harness.service.options import loopback
from harness.service.registry import ServiceEntry, read_entry, this_node
from harness.service.server import ServiceError, free_port, log_tail, start_server, url_host
from harness.sweep.slurm import PENDING_STATES, job_states, live_state, slurm_detail

if TYPE_CHECKING:
    from harness.config.schema import TierConfig
    from harness.planning.plan import Plan

JOB_NAME = "harness-serve"
"""The SLURM job name of a service (``squeue`` shows it)."""
STATE_EVERY_S = 5.0
"""How often the serve command asks SLURM about the job while its server loads."""


def where_path(path: Path) -> Path:
    """The file the job writes where its server listens: ``<id>.where`` (JSON) beside the
    entry (not ``*.json``: the registry reads those as entries)."""
    return path.with_name(f"{path.stem}.where")


def job_folder(path: Path) -> Path:
    """submitit's folder of the service's job (sbatch script, its logs, pickles)."""
    return path.with_name(f"{path.stem}.slurm")


def job_params(
    launcher: dict[str, Any], plan: Plan, tier: TierConfig, path: Path
) -> dict[str, Any]:
    """The job's submitit parameters: a sweep job's resources for this plan and tier, never
    requeued (a service that hits its time limit ends; the registry says so), its files beside
    the registry entry."""
    from harness.sweep.plan import job_resources

    params = job_resources(launcher, plan, tier)
    params.update(
        max_num_timeout=0,
        submitit_folder=str(job_folder(path) / "%j"),
        name=JOB_NAME if launcher.get("name") in (None, "harness") else launcher["name"],
    )
    params.pop("array_parallelism", None)
    return params


def sbatch_text(params: dict[str, Any]) -> str:
    """The sbatch script the job is submitted with (written without SLURM: what a GPU tier
    asks of the cluster can be read where it cannot run)."""
    from harness.sweep.slurm import sbatch_script

    params = {**params, "array_parallelism": 1}
    return sbatch_script(params, 1, dry_run=True)


def submit_job(path: Path, params: dict[str, Any]) -> str:
    """Submit the job serving the entry in ``path``; its SLURM job id.

    Raises:
        ConfigError: SLURM refused the job (a partition, GPU or memory request it cannot grant),
            or its commands are not on this node.
    """
    from submitit.core.utils import FailedJobError

    from harness.sweep.slurm import slurm_executor

    job_folder(path).mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        executor = slurm_executor({**params, "array_parallelism": 1})
        job = executor.submit(serve_in_job, str(path))
    except (FailedJobError, OSError, RuntimeError) as err:  # RuntimeError: submitit finds no srun
        said = " ".join(str(err).split()) or type(err).__name__
        shutil.rmtree(job_folder(path), ignore_errors=True)  # nothing was submitted
        raise ConfigError(
            [
                f"SLURM did not take the service's job ({said}). Fix: run where SLURM's commands "
                "(sbatch, squeue, sacct) work, with a tier (or hydra.launcher.* values) this "
                "cluster has"
            ]
        ) from None
    return str(job.job_id)


def node_address() -> str:
    """This node's address as other nodes reach it: its name's, else the one its default route
    leaves from (a name that resolves to loopback is no address for another node)."""
    try:
        address = socket.gethostbyname(socket.getfqdn())
    except OSError:
        address = "127.0.0.1"
    if not loopback(address):
        return address
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # a UDP "connect" sends nothing: it picks the route
            return str(probe.getsockname()[0])
        except OSError:
            return address


def with_address(command: list[str], host: str, port: int) -> list[str]:
    """``command`` with its ``--host`` and ``--port`` values replaced."""
    out = list(command)
    out[out.index("--host") + 1] = host
    out[out.index("--port") + 1] = str(port)
    return out


def serve_in_job(path_text: str) -> int:
    """The job: start the entry's server on this node, say where it listens, and keep it
    running until it ends (SLURM ends both at ``scancel`` or the time limit)."""
    path = Path(path_text)
    entry = read_entry(path)
    host = node_address() if loopback(entry.host) else entry.host
    port = entry.port or free_port(host)
    entry.command = with_address(entry.command, host, port)
    entry.env.update(cpu_binding(entry))
    process = start_server(entry, own_session=False)
    reach = node_address() if host in ("0.0.0.0", "::") else host
    where = {
        "host": host,
        "url": f"http://{url_host(reach)}:{port}/v1",
        "port": port,
        "node": this_node(),
        "pid": entry.pid,
        "pid_start": entry.pid_start,
        "job_id": os.environ.get("SLURM_JOB_ID", ""),
        "command": entry.command,
        "env": entry.env,
        "started_at": entry.started_at,
    }
    write_private_json(where_path(path), where)
    code = process.wait()
    if code != 0:
        raise ServiceError(
            f"the server exited with code {code}; its log ends:\n{log_tail(entry.log)}"
        )
    return code


def cpu_binding(entry: ServiceEntry) -> dict[str, str]:
    """The CPU build's thread binding for tp x pp > 1, from the CPUs this job was given (the
    serve command's node has others)."""
    deployment = entry.deployment
    ranks = int(deployment.get("tensor_parallel_size") or 1)
    ranks *= int(deployment.get("pipeline_parallel_size") or 1)
    if (
        deployment.get("device") != "cpu"
        or ranks < 2
        or os.environ.get("VLLM_CPU_OMP_THREADS_BIND")
    ):
        return {}
    from harness.engines.vllm_support.cpu import allowed_cpus, threads_bind

    return {"VLLM_CPU_OMP_THREADS_BIND": threads_bind(allowed_cpus(), ranks)}


def job_state(job_id: str) -> str:
    """SLURM's state of the job (``PENDING``, ``RUNNING``, ``COMPLETED``, ...); ``SUBMITTED``
    while neither ``sacct`` nor ``squeue`` knows it yet."""
    info = job_states([job_id]).get(job_id)
    return info["state"].split()[0] if info and info.get("state") else "SUBMITTED"


def job_ended(job_id: str) -> str | None:
    """Why the job is no more (SLURM's account), or None while it is queued or running."""
    info = job_states([job_id]).get(job_id)
    if not info or not info.get("state"):
        return None
    state = info["state"].split()[0]
    if live_state(state):
        return None
    codes = [info.get("exit_code", ""), info.get("derived", "")]
    return f"SLURM job {job_id} {slurm_detail(state, codes, info.get('elapsed', ''))}"


def pending_reason(job_id: str) -> str:
    """Why SLURM keeps the job queued (``squeue``'s reason: ``Resources``, ``Priority``, ...)."""
    try:
        done = subprocess.run(
            ["squeue", "-h", "-j", job_id, "-o", "%r"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip()


def wait_listening(path: Path, entry: ServiceEntry, tell: Callable[[str], None]) -> None:
    """Wait for the job to leave the queue and for its server to say where it listens, saying
    which (pending in the queue, and why; running); the entry then has its node, address,
    port and pid. No bound while queued (Ctrl-C cancels the job).

    Raises:
        ServiceError: the job ended first.
    """
    said_state, said_at, asked = "", 0.0, 0.0
    while True:
        where = read_where(path)
        if where is not None:
            take_where(entry, where)
            return
        if time.monotonic() - asked >= STATE_EVERY_S:  # SLURM's daemons are shared: ask less
            asked = time.monotonic()
            state = job_state(entry.job_id)
            ended = None if live_state(state) or state == "SUBMITTED" else job_ended(entry.job_id)
            if ended:
                tail = job_log(path)
                raise ServiceError(f"{ended} before its server started; its log ends:\n{tail}")
            if state != said_state or time.monotonic() - said_at >= 30.0:
                tell(job_line(entry.job_id, state, said_state == state))
                said_state, said_at = state, time.monotonic()
        time.sleep(0.5)


def job_line(job_id: str, state: str, again: bool) -> str:
    """What the serve command says of the job while it waits for its server's address."""
    still = "still " if again else ""
    if state in PENDING_STATES or state == "SUBMITTED":
        reason = pending_reason(job_id)
        why = f" (reason: {reason})" if reason not in ("", "None") else ""
        return f"SLURM job {job_id} {still}pending in the queue{why}; Ctrl-C cancels it"
    return f"SLURM job {job_id} {still}{state.lower()}: waiting for its server to start"


def take_where(entry: ServiceEntry, where: dict[str, Any]) -> None:
    """The entry completed with what the job wrote of its server."""
    entry.host, entry.port, entry.url = where["host"], int(where["port"]), where["url"]
    entry.node, entry.pid, entry.pid_start = where["node"], where["pid"], where["pid_start"]
    entry.command, entry.env = where["command"], where["env"]
    entry.started_at = where["started_at"]
    entry.starts = max(entry.starts, 1)


def job_log(path: Path, lines: int = 15) -> str:
    """The end of the job's own log (submitit's ``<job>_0_log.err``): why it ended early."""
    logs = sorted(job_folder(path).glob("*/*_log.err"), key=lambda p: p.stat().st_mtime)
    return log_tail(str(logs[-1]), lines) if logs else "(no job log)"


class JobWatch:
    """``wait_ready``'s question "is the server gone?" for a job: SLURM is asked at most every
    ``STATE_EVERY_S``."""

    def __init__(self) -> None:
        self.asked = 0.0

    def __call__(self, entry: ServiceEntry) -> str | None:
        if time.monotonic() - self.asked < STATE_EVERY_S:
            return None
        self.asked = time.monotonic()
        return job_ended(entry.job_id)


def cancel_job(job_id: str, wait_s: float = 120.0) -> bool:
    """``scancel`` the job and wait until SLURM has it ended; whether it was still there."""
    from harness.sweep.slurm import scancel

    if not job_id or job_ended(job_id) is not None:
        return False
    scancel([job_id])
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline and job_ended(job_id) is None:
        time.sleep(0.5)
    return True


def job_running(entry: ServiceEntry) -> str | None:
    """Why the SLURM service ``entry`` is not serving (its job not running), or None."""
    state = job_state(entry.job_id)
    if state == "RUNNING":
        return None
    return job_ended(entry.job_id) or f"its SLURM job {entry.job_id} is {state.lower()}"


def read_where(path: Path) -> dict[str, Any] | None:
    """What the job wrote of its server, if it has."""
    try:
        data = json.loads(where_path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
