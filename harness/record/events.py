"""The run's live record: ``events.jsonl`` in the run directory, one JSON line per event.

Each line is flushed as it happens, so a user (or a dashboard) can follow a run on a cluster with
``tail -f <run dir>/events.jsonl``. Events, in order: ``planned``, ``load_started``, ``loaded``,
``memory_checked`` (the plan's memory beside what the engine took, ``record/memory_check.py``),
then per dataset ``dataset_started`` and ``dataset_done`` or ``dataset_failed`` (or
``dataset_resumed`` for a stored result; ``journals_removed`` when storing a result removed
request journals no result can use), and ``run_done``. Every line has ``event``, ``time``
(ISO 8601, UTC) and ``t`` (seconds since the epoch), then the event's own fields; each dataset's
last event carries its whole ``outcome``, so that a run killed before its summary.json was written
can still be told whole from this file (``harness.record.summary.killed_summary``).

Listeners (GPU telemetry marking its phases) are called with each event. A file that cannot be
written is a warning, never the end of the run.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from harness.secrets import mask

log = logging.getLogger(__name__)

EVENTS = (
    "planned",
    "load_started",
    "loaded",
    "memory_checked",
    "dataset_started",
    "dataset_done",
    "dataset_failed",
    "dataset_resumed",
    "journals_removed",
    "run_done",
)
"""Every event a run records."""

Listener = Callable[[str, dict[str, Any]], None]


class EventLog:
    """Appends events to ``events.jsonl`` and tells the listeners."""

    def __init__(self, path: Path | None, listeners: Sequence[Listener] = ()) -> None:
        self.path = path
        self.listeners = list(listeners)
        self._file: IO[str] | None = None
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 (held for the run)
            except OSError as err:
                log.warning("events.jsonl not written (%s); the run goes on", err)

    def emit(self, event: str, **fields: Any) -> None:
        """Record ``event`` with its fields (flushed at once) and tell every listener."""
        assert event in EVENTS, event
        now = time.time()
        stamp = datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds")
        if self._file is not None:
            record = {"event": event, "time": stamp, "t": round(now, 3), **fields}
            line = json.dumps(record, default=str, ensure_ascii=False)
            try:
                self._file.write(mask(line) + "\n")
                self._file.flush()
            except (OSError, ValueError) as err:  # a full disk or a closed file
                log.warning("events.jsonl: could not write %s (%s); no more events", event, err)
                self._file = None
        for listener in self.listeners:
            listener(event, fields)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def read_events(path: Path) -> list[dict[str, Any]]:
    """Every whole line of ``events.jsonl`` (a line torn by a kill is left out)."""
    out = []
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return []
    for line in text.splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def still_running(events: Sequence[dict[str, Any]]) -> int | None:
    """The pid of the process still writing these events on this host, or None: it ended (its
    ``run_done`` is there) or is gone (killed outright, or another host's, which cannot be
    asked: there a run without ``run_done`` is taken as ended)."""
    import os
    import socket

    if not events or any(e.get("event") == "run_done" for e in events):
        return None
    planned = next((e for e in events if e.get("event") == "planned"), {})
    pid, host = planned.get("pid"), planned.get("host")
    if not isinstance(pid, int) or host != socket.gethostname() or pid == os.getpid():
        return None
    try:
        os.kill(pid, 0)  # PermissionError: alive, another user's (falls through)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return pid


def dataset_times(events: Sequence[dict[str, Any]]) -> dict[str, tuple[float, float]]:
    """Each dataset's (start, end), from its first and last event (a stored result's single
    ``dataset_resumed`` is both)."""
    spans: dict[str, tuple[float, float]] = {}
    for e in events:
        name, t = e.get("dataset"), e.get("t")
        if not isinstance(name, str) or not isinstance(t, int | float):
            continue
        start = spans.get(name, (t, t))[0]
        spans[name] = (start, t)
    return spans
