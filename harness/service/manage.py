"""``python -m harness.serve --list`` and ``--stop ID|all``: the registered services and ending
them. A service whose server is gone (its pid here; its SLURM job by ``sacct``/``squeue``), or
whose serve command was killed before it was ready, is shown (and marked) dead; stopping one
kills its whole process group (``scancel``s its job) and removes its registry file."""

from __future__ import annotations

import time
from pathlib import Path

from harness.console import say
from harness.errors import ConfigError, did_you_mean
from harness.service.claim import end_service, reap_orphan, registry_lock
from harness.service.registry import (
    ServiceEntry,
    Status,
    mark_dead,
    read_registry,
    server_alive,
    this_node,
)
from harness.service.slurm_job import job_ended, job_state, where_path


def live_status(path: Path, entry: ServiceEntry) -> str:
    """The entry's status, checked against the process table, or SLURM for a job (a gone
    server is marked dead; a ``starting`` one whose serve command is gone too: ``reap_orphan``)."""
    if reap_orphan(path, entry):
        pass
    elif entry.launcher == "slurm" and entry.status != Status.dead and entry.job_id:
        ended = job_ended(entry.job_id)
        if ended:
            mark_dead(path, entry, ended)
        else:
            return f"{entry.status.value} (SLURM job {entry.job_id} {job_state(entry.job_id)})"
    elif here_and_gone(entry):
        mark_dead(path, entry, f"its server (pid {entry.pid}) ended")
    if entry.node and entry.node != this_node() and entry.status != Status.dead:
        return f"{entry.status.value} (on {entry.node})"
    return entry.status.value + (f": {entry.reason}" if entry.status == Status.dead else "")


def here_and_gone(entry: ServiceEntry) -> bool:
    """Whether the entry's server, started on this node, has ended (an entry claimed whose
    server is not started yet has no pid: not gone)."""
    started = entry.pid > 0 or entry.status == Status.ready
    here = entry.launcher == "local" and entry.node == this_node()
    return entry.status != Status.dead and here and started and not server_alive(entry)


def format_services(outputs_root: str | Path) -> str:
    """The services under ``outputs_root``, one line each."""
    registry = read_registry(outputs_root)
    if not registry.entries and not registry.unreadable:
        return f"no services under {Path(outputs_root).resolve()}/services"
    rows = [("ID", "MODEL", "URL", "PID", "STARTED", "STARTS", "STATUS")]
    for path, entry in registry.entries.items():
        with registry_lock(outputs_root):
            status = live_status(path, entry)
        started = time.strftime("%Y-%m-%d %H:%M", time.localtime(entry.started_at))
        key = " (key)" if entry.api_key else ""
        url = f"{entry.url or '(not yet known)'}{key}"
        pid = f"{entry.pid}@{entry.node}" if entry.job_id else str(entry.pid)
        rows.append((entry.id, entry.model, url, pid, started, str(entry.starts), status))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    lines += [f"{path.name}: not yours to use ({why})" for path, why in registry.unreadable.items()]
    return "\n".join(lines)


def stop(outputs_root: str | Path, which: str) -> int:
    """Stop the service ``which`` (an id, or ``all`` of this user's): its process group ended,
    its registry file removed. Exit code 2 for an id that is not registered."""
    registry = read_registry(outputs_root)
    ids = {entry.id: path for path, entry in registry.entries.items()}
    if which != "all" and which not in ids:
        known = ", ".join(sorted(ids)) or "none"
        raise ConfigError(
            [
                f"--stop {which}: no such service of yours under {Path(outputs_root).resolve()}"
                f"/services.{did_you_mean(which, ids)} Registered: {known} "
                "(python -m harness.serve --list; outputs_root=... for another registry)"
            ]
        )
    chosen = sorted(ids) if which == "all" else [which]
    if not chosen:
        say("no services to stop")
    for service_id in chosen:
        path = ids[service_id]
        entry = registry.entries[path]
        said = end_service(entry)
        path.unlink(missing_ok=True)
        path.with_suffix(".lock").unlink(missing_ok=True)
        where_path(path).unlink(missing_ok=True)
        say(f"stopped service {service_id}: {said}; registry entry removed (log: {entry.log})")
    return 0
