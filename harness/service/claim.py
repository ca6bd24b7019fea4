"""Start or reuse a service, atomically, and clean up after serve commands that were killed.

Two serve commands for one deployment started at the same instant must not start two servers:
each looks for a service and writes its own ``starting`` entry under one lock of the registry
folder (``fcntl.flock`` on ``services/.registry.lock``), so the second finds the first's entry and
waits for it (then reuses it) instead of starting another. The lock is held for the look and the
claim only, never while a server loads.

A ``starting`` entry records its serve command (pid, the pid's start time, node). Where that
command is gone (SIGKILL, a lost node) nobody waits for the server any more: if the server is up
(it lists its model and completes one token) the entry is adopted as ready, else its server's
process group is killed (its SLURM job cancelled) and the entry marked dead. ``--list`` and every
serve command do that (``reap_orphans``).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from harness.console import say
from harness.service.options import ServiceConfig, loopback
from harness.service.probe import NotAnswering, complete_one_token, served_models
from harness.service.registry import (
    Launcher,
    ServiceEntry,
    Status,
    entry_path,
    mark_dead,
    pid_start,
    read_entry,
    read_registry,
    services_dir,
    starter_gone,
    this_node,
    write_entry,
)
from harness.service.server import stop_server

LOCK = ".registry.lock"
"""The registry folder's lock file: held while a serve command looks and claims."""
ORPHAN_CHECK_TIMEOUT_S = 30.0
"""A server whose serve command is gone is adopted only if it completes a token within this."""


@contextlib.contextmanager
def registry_lock(outputs_root: str | Path) -> Iterator[None]:
    """The registry to this process alone while in the block (an exclusive ``flock``)."""
    folder = services_dir(outputs_root)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / LOCK, "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # released when the file closes
        yield


def end_service(entry: ServiceEntry, grace_s: float = 30.0) -> str:
    """End what runs of ``entry``: cancel its SLURM job, or kill its server's process group
    (this node only); what was ended, in words."""
    if entry.launcher == "slurm":
        from harness.service.slurm_job import cancel_job

        if not entry.job_id:
            return "no SLURM job was submitted"
        if cancel_job(entry.job_id):
            return f"SLURM job {entry.job_id} cancelled"
        return f"its SLURM job {entry.job_id} had ended already"
    ended = stop_server(entry, grace_s=grace_s)
    return f"{ended} process(es) ended" if ended else "its server had ended already"


def server_up(entry: ServiceEntry) -> bool:
    """Whether the entry's server lists its model and completes one token."""
    if not entry.url or (entry.launcher == "local" and entry.pid <= 0):
        return False
    try:
        listed = served_models(entry.url, entry.api_key)
        if not any(m.get("id") == entry.model_id for m in listed):
            return False
        complete_one_token(entry.url, entry.api_key, entry.model_id, ORPHAN_CHECK_TIMEOUT_S)
    except NotAnswering:
        return False
    return True


def reap_orphan(path: Path, entry: ServiceEntry) -> bool:
    """A ``starting`` entry whose serve command is gone: adopted as ready where its server is up,
    else its server ended and the entry marked dead. Whether it was marked dead."""
    if entry.status != Status.starting or not starter_gone(entry):
        return False
    if entry.launcher == "slurm" and not entry.url:  # the job may have written where it is
        from harness.service.slurm_job import read_where, take_where

        where = read_where(path)
        if where:
            take_where(entry, where)
    if server_up(entry):
        entry.status = Status.ready
        write_entry(path, entry)
        say(f"service {entry.id}: its serve command (pid {entry.starter_pid}) ended, but the "
            "server is up and healthy: registered as ready")  # fmt: skip
        return False
    ended = end_service(entry, grace_s=5.0)
    reason = f"its serve command (pid {entry.starter_pid}) ended before it was ready ({ended})"
    mark_dead(path, entry, reason)
    say(f"service {entry.id} is dead: {reason}")
    return True


def reap_orphans(outputs_root: str | Path) -> None:
    """``reap_orphan`` for every entry of this user."""
    for path, entry in read_registry(outputs_root).entries.items():
        reap_orphan(path, entry)


def same_place(entry: ServiceEntry, service: ServiceConfig, launcher: Launcher) -> bool:
    """Whether ``entry`` serves where ``service`` asks: the same launcher, host and port (a SLURM
    service's address is its node's: any, unless ``service.host`` names one)."""
    if entry.launcher != launcher or (service.port is not None and service.port != entry.port):
        return False
    if launcher == "slurm":
        return loopback(service.host) or entry.host == service.host
    return entry.host == service.host


def claim_starter(entry: ServiceEntry) -> None:
    """Record this serve command in the entry it is about to start."""
    entry.starter_pid = os.getpid()
    entry.starter_start = pid_start(os.getpid()) or 0
    entry.starter_node = this_node()


@dataclass
class Claim:
    """What a serve command got: a service to start (``reused`` False: the entry is written,
    ``starting``, and this command's), or one that serves the deployment already."""

    path: Path
    entry: ServiceEntry
    reused: bool


def starting_twin(
    outputs_root: str | Path, want: dict[str, object], service: ServiceConfig, launcher: Launcher
) -> tuple[Path, ServiceEntry] | None:
    """A ``starting`` entry of this deployment and place whose serve command still runs."""
    for path, entry in read_registry(outputs_root).entries.items():
        twin = entry.status == Status.starting and entry.deployment == want
        if twin and same_place(entry, service, launcher) and not starter_gone(entry):
            return path, entry
    return None


def claim(
    outputs_root: str | Path,
    want: dict[str, object],
    service: ServiceConfig,
    launcher: Launcher,
    find_ready: Callable[[], ServiceEntry | None],
    make_entry: Callable[[], ServiceEntry],
) -> Claim:
    """Reuse the ready service ``find_ready`` finds, or claim a new ``starting`` entry
    (``make_entry``), atomically; a service of this deployment that another serve command is
    starting is waited for, then looked for again."""
    while True:
        with registry_lock(outputs_root):
            reap_orphans(outputs_root)
            ready = find_ready()
            if ready is not None:
                return Claim(entry_path(outputs_root, ready.id), ready, reused=True)
            twin = starting_twin(outputs_root, want, service, launcher)
            if twin is None:
                entry = make_entry()
                claim_starter(entry)
                path = entry_path(outputs_root, entry.id)
                write_entry(path, entry)
                return Claim(path, entry, reused=False)
        wait_for_twin(*twin)


def wait_for_twin(path: Path, entry: ServiceEntry, every_s: float = 30.0) -> None:
    """Wait while another serve command starts the service in ``path`` (it is ready, dead or
    gone, or its command ended), saying so."""
    where = f"pid {entry.starter_pid} on {entry.starter_node}"
    say(f"service {entry.id} of this deployment is being started by another serve command "
        f"({where}); waiting for it to be ready, then reusing it")  # fmt: skip
    said = time.monotonic()
    while True:
        try:
            now = read_entry(path)
        except (OSError, ValueError):
            return  # stopped, or given up by its starter
        if now.status != Status.starting or starter_gone(now):
            return
        if time.monotonic() - said >= every_s:
            say(f"  still waiting for service {entry.id} ({where})")
            said = time.monotonic()
        time.sleep(0.5)
