"""The run's live record: ``events.jsonl`` in the run directory, one JSON line per event.

Each line is flushed as it happens, so a user (or a dashboard) can follow a run on a cluster with
``tail -f <run dir>/events.jsonl``. Events, in order: ``planned``, ``load_started``, ``loaded``,
then per dataset ``dataset_started`` and ``dataset_done`` or ``dataset_failed`` (or
``dataset_resumed`` for a stored result), and ``run_done``. Every line has ``event``, ``time``
(ISO 8601, UTC) and ``t`` (seconds since the epoch), then the event's own fields.

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
    "dataset_started",
    "dataset_done",
    "dataset_failed",
    "dataset_resumed",
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
