"""Where an endpoint's server runs, for its GPU telemetry: on this node (its GPUs are the ones
this run's NVML telemetry can watch) or elsewhere (then nothing here can).

A server is on this node when its URL's host is a loopback or unspecified address, ``localhost``,
this node's host name, or one of this node's own addresses. Its GPUs are those of its process:
the process listening on the URL's port is found through ``/proc`` (its sockets; only a process
of this user can be read, as a ``harness.serve`` service is), and its ``CUDA_VISIBLE_DEVICES``
read from its environment; when the process or the variable cannot be read, every GPU of this
node is watched.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

PROC = Path("/proc")
LISTEN = "0A"
"""The state of a listening socket in ``/proc/net/tcp``."""


@dataclass(frozen=True)
class ServerPlace:
    """Where a server runs, as far as this node can tell."""

    host: str
    """The URL's host."""
    on_this_node: bool
    """Its GPUs, if any, are this node's."""
    pid: int | None = None
    """The process listening on its port (None: not found, or not readable)."""
    visible: tuple[str, ...] | None = None
    """That process's ``CUDA_VISIBLE_DEVICES`` entries (None: unset or unreadable: every GPU)."""

    def telemetry(self) -> str:
        """What the record says of the server's GPU telemetry."""
        if not self.on_this_node:
            return f"not available: the endpoint runs on {self.host}"
        who = f"pid {self.pid}" if self.pid else "its process not found by its port"
        if self.visible is None:
            return f"per phase on this node: every GPU of it (the server: {who})"
        gpus = ",".join(self.visible) or "none"
        return f"per phase on this node: GPUs {gpus} (the server's CUDA_VISIBLE_DEVICES, {who})"


def place_of(base_url: str) -> ServerPlace:
    """Where the server at ``base_url`` runs (see the module)."""
    parts = urlsplit(base_url)
    host = parts.hostname or ""
    if not on_this_node(host):
        return ServerPlace(host, False)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return ServerPlace(host, True)
    pid = listener_pid(port)
    return ServerPlace(host, True, pid, visible_devices(pid) if pid else None)


def on_this_node(host: str) -> bool:
    """``host`` is this node (no name lookup: a host name is compared with this node's)."""
    name = host.strip("[]").lower()
    if name in ("localhost", "localhost.localdomain"):
        return True
    with contextlib.suppress(ValueError):
        address = ipaddress.ip_address(name)
        return address.is_loopback or address.is_unspecified or name in _own_addresses()
    node = socket.gethostname().lower()
    return name in (node, node.split(".")[0])


def _own_addresses() -> set[str]:
    """This node's addresses, as its host name resolves locally (``/etc/hosts`` first)."""
    try:
        infos = socket.getaddrinfo(socket.gethostname(), None)
    except OSError:
        return set()
    return {str(info[4][0]).lower() for info in infos}


def listener_pid(port: int) -> int | None:
    """The pid of a process of this user listening on TCP ``port`` (None: none found)."""
    inodes = _listening_inodes(port)
    if not inodes:
        return None
    wanted = {f"socket:[{inode}]" for inode in inodes}
    for proc in PROC.iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):  # another user's, or gone meanwhile
            for fd in (proc / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) in wanted:
                        return int(proc.name)
    return None


def _listening_inodes(port: int) -> set[str]:
    inodes: set[str] = set()
    for table in ("tcp", "tcp6"):
        with contextlib.suppress(OSError):
            for line in (PROC / "net" / table).read_text().splitlines()[1:]:
                fields = line.split()
                listening = len(fields) > 9 and fields[3] == LISTEN
                if listening and int(fields[1].rpartition(":")[2], 16) == port:
                    inodes.add(fields[9])
    return inodes


def visible_devices(pid: int) -> tuple[str, ...] | None:
    """``CUDA_VISIBLE_DEVICES`` of process ``pid`` as its entries (None: unset, unreadable)."""
    try:
        environ = (PROC / str(pid) / "environ").read_bytes()
    except OSError:
        return None
    for item in environ.split(b"\0"):
        name, _, value = item.partition(b"=")
        if name == b"CUDA_VISIBLE_DEVICES":
            text = value.decode(errors="replace")
            return tuple(v.strip() for v in text.split(",") if v.strip())
    return None
