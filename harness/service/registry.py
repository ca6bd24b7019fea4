"""The service registry: one JSON file per service under ``<outputs_root>/services/``.

Each file is written atomically with mode 0600 (it holds the service's API key, so only its owner
reads it) and is not masked: it is the one place the key is kept. Whether a registered service is
still there is read from the process table (its pid and the start time the kernel gave that pid,
so a reused pid is not taken for it); ``probe.py`` asks the server itself.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from harness.record.files import write_private_json

Launcher = Literal["local", "slurm"]
"""Where a service's server runs: a process of this node, or a SLURM job."""

SERVICES = "services"
"""The registry's folder under ``outputs_root``."""


class Status(StrEnum):
    """Where a service stands, as its file says (``--list`` checks the process too)."""

    starting = "starting"
    ready = "ready"
    dead = "dead"
    """Its server is gone (pid ended) or stopped answering: never attached to again."""


@dataclass
class ServiceEntry:
    """One registered service: where it answers, what it serves, how it was started, whose it is."""

    id: str
    """The service's name (``<model>-<6 hex>``): ``--stop ID``, the run's console and record."""
    url: str
    """The OpenAI API root runs send requests to (``http://127.0.0.1:8000/v1``)."""
    host: str
    """The address the server listens on (``service.host``)."""
    port: int
    """Its port; a restart uses the same one."""
    node: str
    """The host name of the node it runs on (pids mean something there only)."""
    model: str
    """The model's name (``model.name``)."""
    model_id: str
    """The id the server serves the model under (``/v1/models``)."""
    deployment: dict[str, Any]
    """What a run must plan to attach: the model and the server's engine arguments
    (``attach.deployment_key``)."""
    plan: dict[str, Any]
    """The serve command's plan (``Plan.to_dict``)."""
    command: list[str]
    """The server's command line (no secret in it: the key goes by its environment)."""
    env: dict[str, str]
    """What harness added to the server's environment (no secret)."""
    log: str
    """The server's log file."""
    uid: int
    """The owner's user id; another user's service is never attached to."""
    user: str
    """The owner's user name."""
    started_at: float
    """When the server (last) started, seconds since the epoch."""
    startup_timeout_s: float
    """The start-up budget: a restart waits as long."""
    api: str = "completions"
    """The OpenAI API runs use (``completions``: every request type)."""
    api_key: str | None = field(default=None, repr=False)
    """The key the server requires (``Authorization: Bearer``); None on loopback by default."""
    pid: int = 0
    """The server's pid, which leads its process group (vLLM's EngineCore and workers join it)."""
    pid_start: int = 0
    """The kernel's start time of that pid (``/proc/<pid>/stat``), telling a reused pid apart."""
    status: Status = Status.starting
    """``starting``, ``ready`` or ``dead``."""
    reason: str = ""
    """Why it is dead, when it is."""
    starts: int = 0
    """How many times harness started its server (1, then 2 after a restart)."""
    served: dict[str, Any] = field(default_factory=dict)
    """What the server reports of itself (``/v1/models``: ``max_model_len``, ``root``)."""
    launcher: Launcher = "local"
    """Where the server runs: ``local`` (a process of this node) or ``slurm`` (a SLURM job)."""
    job_id: str = ""
    """The SLURM job that runs the server (``launcher`` slurm): its liveness, ``scancel``."""
    starter_pid: int = 0
    """The serve command that starts it (while ``starting``): gone with the server not up, the
    entry is dead (``claim.reap_orphan``)."""
    starter_start: int = 0
    """That pid's start time (``/proc/<pid>/stat``), telling a reused pid apart."""
    starter_node: str = ""
    """The node the serve command runs on."""

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["status"] = self.status.value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ServiceEntry:
        known = {f.name for f in fields(cls)}
        entry = cls(**{k: v for k, v in data.items() if k in known})
        entry.status = Status(entry.status)
        return entry


def services_dir(outputs_root: str | Path) -> Path:
    """``<outputs_root>/services`` (not made)."""
    return Path(outputs_root).expanduser().resolve() / SERVICES


def entry_path(outputs_root: str | Path, service_id: str) -> Path:
    return services_dir(outputs_root) / f"{service_id}.json"


def write_entry(path: Path, entry: ServiceEntry) -> None:
    """Write ``entry`` atomically, readable and writable by its owner only (0600), unmasked."""
    write_private_json(path, entry.to_dict())


def read_entry(path: Path) -> ServiceEntry:
    """The entry in ``path``; ``OSError`` (another user's file) or ``ValueError`` (not one)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path} holds no service entry")
    try:
        return ServiceEntry.from_dict(data)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path} holds no service entry ({err})") from None


@dataclass
class Registry:
    """What ``<outputs_root>/services/`` holds: this user's entries, and the files it cannot
    read or parse (another user's service, a broken file), each with why."""

    entries: dict[Path, ServiceEntry]
    """Readable entries by their file."""
    unreadable: dict[Path, str]
    """Files that are no entry of this user's, with the reason."""


def read_registry(outputs_root: str | Path) -> Registry:
    """Every file of the registry: entries owned by this user, and why the others are not used."""
    entries: dict[Path, ServiceEntry] = {}
    unreadable: dict[Path, str] = {}
    folder = services_dir(outputs_root)
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            owner = path.stat().st_uid
            if owner != os.getuid():
                unreadable[path] = f"it belongs to user {user_name(owner)}"
                continue
            entries[path] = read_entry(path)
        except (OSError, ValueError) as err:
            unreadable[path] = str(err)
    return Registry(entries, unreadable)


def user_name(uid: int | None = None) -> str:
    """The name of ``uid`` (this process's user by default), or its number where none is known."""
    import pwd

    uid = os.getuid() if uid is None else uid
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def this_node() -> str:
    return socket.gethostname()


def pid_start(pid: int) -> int | None:
    """The start time the kernel records for ``pid`` (clock ticks after boot), or None when no
    live process has that pid (gone, or a zombie waiting to be reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    after = stat.rsplit(")", 1)[1].split()  # the name in parentheses may hold spaces
    if after[0] in ("Z", "X"):
        return None
    return int(after[19])


def starter_gone(entry: ServiceEntry) -> bool:
    """Whether the serve command that started ``entry`` is known to have ended (its pid ended or
    is now another process's); False where it runs on another node (nothing here can tell)."""
    if entry.starter_node != this_node() or entry.starter_pid <= 0:
        return False
    return pid_start(entry.starter_pid) != entry.starter_start


def server_alive(entry: ServiceEntry) -> bool:
    """Whether the entry's server process is still running (this node only)."""
    if entry.launcher != "local" or entry.node != this_node() or entry.pid <= 0:
        return False
    return pid_start(entry.pid) == entry.pid_start


def group_alive(pgid: int) -> bool:
    """Whether any process of the process group ``pgid`` is left."""
    if pgid <= 0:
        return False
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def mark_dead(path: Path, entry: ServiceEntry, reason: str) -> None:
    """Record that the service is gone (it is never attached to again); ``--stop`` clears it."""
    entry.status, entry.reason = Status.dead, reason
    with contextlib.suppress(OSError):
        write_entry(path, entry)
