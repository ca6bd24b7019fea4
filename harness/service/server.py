"""vLLM's own OpenAI server, started from a plan, waited for, checked, stopped and restarted.

The server gets the deployment the in-process vLLM engine would be built with
(``engines.inprocess.vllm.engine_kwargs``: dtype, tp/pp, max_model_len, seed, quantization, the
CPU build's KV cache, ``strategy.engine_args``) as command-line flags, plus
``--data-parallel-size``; on the CPU the environment the in-process engine sets
(``vllm_support.cpu.cpu_environment``). It runs in a session of its own (a terminal's Ctrl-C or
hang-up does not reach it; vLLM's EngineCore and workers join its process group), writes to a log
file beside its registry entry, and is stopped by killing that group. An API key goes to it by its
environment (``VLLM_API_KEY``): a command line is readable by every user of the node.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.errors import HarnessError
from harness.service.probe import NotAnswering, complete_one_token, served_models
from harness.service.registry import ServiceEntry, Status, pid_start, this_node

if TYPE_CHECKING:
    from harness.planning.plan import Plan

SERVER_MODULE = "vllm.entrypoints.openai.api_server"
"""vLLM's OpenAI server, run as a module (the ``vllm`` CLI of the CPU build fails reading its own
version)."""
NOT_SERVER_ARGS = ("pretrained", "batch_size")
"""Keywords of lm-eval's ``VLLM`` that are no server flag (``pretrained`` is ``--model``)."""
STARTUP_BASE_S = 300.0
"""The start-up budget's floor: the bundled model is ready in about 60 s on two CPU cores."""
STARTUP_PER_GB_S = 10.0
"""More per GB of weights (reading them, at 100 MB/s from a slow shared file system), twice that
on the CPU: a 70B model in bfloat16 (140 GB) waits 1,700 s on GPUs."""
HEALTH_TIMEOUT_S = 300.0
"""Longest the first one-token completion may take: it warms the engine up."""
STOP_GRACE_S = 30.0
"""How long a stopped server has to end on SIGTERM before its group is killed."""


class ServiceError(HarnessError):
    """The server could not be started, or did not become ready; the message says why."""

    exit_code = 1  # the input was fine: the server failed


def server_fields() -> frozenset[str] | None:
    """vLLM's ``EngineArgs`` fields (the server's flags), read from the installed sources
    without importing vLLM; None where vLLM is not installed."""
    import importlib.util

    from harness.config.engine_args import engine_args_fields

    spec = importlib.util.find_spec("vllm")
    if spec is None or spec.origin is None:
        return None
    source = Path(spec.origin).parent / "engine" / "arg_utils.py"
    return frozenset(engine_args_fields(source.read_text(encoding="utf-8")))


def server_args(plan: Plan) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """What the server is started with: the model (``--model``), the engine's flags, and the
    keywords of the in-process engine that are no server flag (lm-eval's own: reasoning
    settings; a run with any of them never attaches, see ``attach.py``)."""
    from harness.engines.inprocess.vllm import engine_kwargs

    kwargs = engine_kwargs(plan)
    model = str(kwargs["pretrained"])
    known = server_fields()
    flags: dict[str, Any] = {}
    client: dict[str, Any] = {}
    for key, value in kwargs.items():
        if key in NOT_SERVER_ARGS:
            continue
        (flags if known is None or key in known else client)[key] = value
    if plan.data_parallel_size > 1:
        flags["data_parallel_size"] = plan.data_parallel_size
    return model, flags, client


def as_flags(args: Mapping[str, Any]) -> list[str]:
    """Keyword arguments as vLLM's command line takes them: ``--max-model-len 256``; a bool as
    ``--enforce-eager`` / ``--no-enforce-eager``; a mapping as JSON; a list as several values."""
    out: list[str] = []
    for key, value in args.items():
        name = key.replace("_", "-")
        if value is None:
            continue
        if isinstance(value, bool):
            out.append(f"--{name}" if value else f"--no-{name}")
        elif isinstance(value, Mapping):
            out += [f"--{name}", json.dumps(value)]
        elif isinstance(value, list | tuple):
            out += [f"--{name}", *(str(v) for v in value)]
        else:
            out += [f"--{name}", str(value)]
    return out


def server_command(plan: Plan, host: str, port: int) -> list[str]:
    """The server's command line for ``plan`` on ``host:port`` (no secret in it)."""
    model, flags, _ = server_args(plan)
    return [
        sys.executable,
        "-m",
        SERVER_MODULE,
        "--model",
        model,
        "--host",
        host,
        "--port",
        str(port),
        "--disable-uvicorn-access-log",  # one line per request would fill its log
        *as_flags(flags),
    ]


def server_environment(plan: Plan) -> dict[str, str]:
    """What the server's environment needs beyond this one's (the CPU build's thread binding
    for tp > 1, as the in-process engine sets it); values already set here win."""
    if plan.device != "cpu":
        return {}
    from harness.engines.vllm_support.cpu import allowed_cpus, cpu_environment

    return cpu_environment(plan, allowed_cpus(), os.environ)


def startup_budget_s(plan: Plan) -> float:
    """How long the server may take to become ready: ``STARTUP_BASE_S`` plus
    ``STARTUP_PER_GB_S`` per GB of weights (twice on the CPU)."""
    per_gb = STARTUP_PER_GB_S * (2 if plan.device == "cpu" else 1)
    return round(STARTUP_BASE_S + per_gb * plan.memory.weights_total_gb, 1)


def start_server(entry: ServiceEntry, own_session: bool = True) -> subprocess.Popen[bytes]:
    """Start ``entry``'s server, logging to ``entry.log``; the entry gets its pid, the pid's start
    time and one more start. ``own_session``: in a session of its own, outliving this process (a
    SLURM job keeps its server as its child instead: SLURM ends it with the job)."""
    env = {**os.environ, **entry.env}
    if entry.api_key:
        env["VLLM_API_KEY"] = entry.api_key
    Path(entry.log).parent.mkdir(parents=True, exist_ok=True)
    with open(entry.log, "ab") as log:
        process = subprocess.Popen(
            entry.command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=Path(entry.log).parent,
            start_new_session=own_session,  # its own session and group: it outlives this command
        )
    entry.pid, entry.pid_start = process.pid, pid_start(process.pid) or 0
    entry.node, entry.started_at = this_node(), time.time()
    entry.starts += 1
    entry.status, entry.reason = Status.starting, ""
    return process


def free_port(host: str) -> int:
    """A port nobody listens on at ``host`` now."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def url_host(host: str) -> str:
    """Where runs reach a server listening on ``host``: loopback for loopback and the wildcard
    (``0.0.0.0`` listens there too), else the address itself."""
    if host in ("0.0.0.0", "::", "localhost") or host.startswith("127."):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def local_pid_gone(entry: ServiceEntry) -> str | None:
    """Why the entry's server process is not running here, or None while it runs."""
    if pid_start(entry.pid) != entry.pid_start:
        return "the server exited while starting"
    return None


def log_tail(path: str, lines: int = 15) -> str:
    """The last lines of the server's log (what it said before it failed)."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join("    " + line for line in text.splitlines()[-lines:])


def wait_ready(
    entry: ServiceEntry,
    tell: Callable[[str], None],
    every_s: float = 30.0,
    gone: Callable[[ServiceEntry], str | None] = local_pid_gone,
) -> None:
    """Wait until the server lists ``entry.model_id`` at ``/v1/models``, within the entry's
    start-up budget, saying what it waits for (and every ``every_s`` that it still waits); then
    the health check. ``entry.served`` gets what the server reports of the model. ``gone`` says
    why the server is no more (its pid here; its SLURM job), or None while it runs.

    Raises:
        ServiceError: the server exited, did not list the model in time, or failed the check.
    """
    budget = entry.startup_timeout_s
    where = f"pid {entry.pid}" + (
        f", SLURM job {entry.job_id} on {entry.node}" * bool(entry.job_id)
    )
    tell(
        f"waiting for vLLM's OpenAI server ({where}) to load {entry.model} and list it "
        f"at {entry.url}/models: up to {budget:.0f}s (scaled by the model's size; "
        f"service.startup_timeout_s); its log: {entry.log}"
    )
    started = time.monotonic()
    said = started
    while True:
        why = gone(entry)
        if why:
            raise ServiceError(f"{why}; its log ends:\n{log_tail(entry.log)}")
        with contextlib.suppress(NotAnswering):
            models = served_models(entry.url, entry.api_key)
            found = [m for m in models if m.get("id") == entry.model_id]
            if found:
                keep = ("id", "root", "max_model_len", "owned_by")
                entry.served = {k: found[0][k] for k in keep if k in found[0]}
                break
        waited = time.monotonic() - started
        if waited > budget:
            raise ServiceError(
                f"the server did not list {entry.model_id} within {budget:.0f}s. Fix: a longer "
                f"budget (service.startup_timeout_s=...), or see its log:\n{log_tail(entry.log)}"
            )
        if time.monotonic() - said >= every_s:
            tell(f"  still waiting for {entry.id}: {waited:.0f}s of {budget:.0f}s")
            said = time.monotonic()
        time.sleep(0.25)  # ready is seen within a quarter second (a 1 s poll cost 0.5 s a start)
    check_health(entry)


def check_health(entry: ServiceEntry, timeout: float = HEALTH_TIMEOUT_S) -> None:
    """One-token completion; ``ServiceError`` when the server does not give one."""
    try:
        complete_one_token(entry.url, entry.api_key, entry.model_id, timeout)
    except NotAnswering as err:
        raise ServiceError(f"service {entry.id} fails its health check: {err}") from None


def group_members(pgid: int, since: int) -> list[int]:
    """Live processes of the process group ``pgid`` started at or after ``since`` (kernel
    ticks): the server and what it started, never a later group that reused the number."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            after = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(after[2]) == pgid and int(after[19]) >= since and after[0] not in ("Z", "X"):
            members.append(int(stat.parent.name))
    return members


def stop_server(entry: ServiceEntry, grace_s: float = STOP_GRACE_S) -> int:
    """End the server's whole process group: SIGTERM (vLLM shuts its EngineCore and workers
    down), SIGKILL after ``grace_s``. Returns how many processes were there.

    Raises:
        ServiceError: the server runs on another node (its pids mean nothing here).
    """
    if entry.node != this_node():
        raise ServiceError(
            f"service {entry.id} runs on {entry.node}, not here. Fix: stop it there "
            "(python -m harness.serve --stop ...)"
        )
    members = group_members(entry.pid, entry.pid_start) if entry.pid > 0 else []
    if not members:
        return 0
    with contextlib.suppress(ProcessLookupError):
        os.killpg(entry.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while group_members(entry.pid, entry.pid_start) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in group_members(entry.pid, entry.pid_start):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + grace_s
    while group_members(entry.pid, entry.pid_start) and time.monotonic() < deadline:
        time.sleep(0.1)
    return len(members)
