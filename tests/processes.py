"""Reading the process table (Linux ``/proc``): which processes live, by pid, group or ancestry.

Processes are told apart by pid, process group and parent links, never by environment or
command line: vLLM and the engine process rename themselves (setproctitle), which overwrites
what ``/proc/<pid>/environ`` shows.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, pgid) of a process, or None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0], int(fields[1]), int(fields[2])


def is_live(pid: int) -> bool:
    """Running or sleeping; a zombie (dead, not yet reaped) does not count."""
    stat = _stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")


def _pids() -> Iterable[int]:
    return (int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit())


def command(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()[:200]


def group_members(pgid: int) -> list[int]:
    """Live processes of process group ``pgid``."""
    found = []
    for pid in _pids():
        stat = _stat(pid)
        if stat is not None and stat[2] == pgid and stat[0] not in ("Z", "X"):
            found.append(pid)
    return found


def descendants(root: int) -> dict[int, str]:
    """Live descendants of ``root``: pid -> command line."""
    children: dict[int, list[int]] = {}
    for pid in _pids():
        stat = _stat(pid)
        if stat is not None and stat[0] not in ("Z", "X"):
            children.setdefault(stat[1], []).append(pid)
    found: dict[int, str] = {}
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found[child] = command(child)
                todo.append(child)
    return found


def live(pids: Iterable[int]) -> dict[int, str]:
    return {pid: command(pid) for pid in pids if is_live(pid)}


class Watcher:
    """Records every descendant ``root`` has while it runs (sampled every ``interval`` s)."""

    def __init__(self, root: int, interval: float = 0.25) -> None:
        self.root, self.interval = root, interval
        self.seen: dict[int, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for pid, cmd in descendants(self.root).items():
                if cmd:
                    self.seen[pid] = cmd
                else:
                    self.seen.setdefault(pid, cmd)
            self._stop.wait(self.interval)

    def stop(self) -> dict[int, str]:
        self._stop.set()
        self._thread.join()
        return self.seen


def wait_until(check: Callable[[], bool], timeout: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(interval)
    return check()
