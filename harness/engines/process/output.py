"""What the engine's own process prints, taken off the console and into the run's log.

The child's stdout and stderr (file descriptors 1 and 2, which vLLM's EngineCore and workers,
the resource tracker and C libraries inherit and write to directly) are a pipe that the parent
reads line by line and logs under ``harness.engine.output``: every line reaches ``harness.log``;
the console shows what the console filter lets through (``harness.console``): errors always,
the engine's warnings as one counted line, and its INFO log and progress bars (the last frame
of each) only with ``verbose=true``. Without this, a vLLM run printed 95-111 lines of vLLM's
start-up log and bars on the console, with the run's output sent to a file or not.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import threading
from multiprocessing.connection import Connection
from typing import Any

from harness.console import ENGINE_OUTPUT_LOGGER as OUTPUT_LOGGER

_ERROR = re.compile(
    r"^(?:\([^)]*pid=\d+\)\s*)?(?:ERROR|CRITICAL|FATAL)\b"  # vLLM's (and Ray's) own format
    r"|^Traceback \(most recent call last\)|^\w*(?:Error|Exception)\b.*:"
    r"|^\s*File \"|^\s+\^",
)
_WARNING = re.compile(r"^(?:\([^)]*pid=\d+\)\s*)?(?:WARNING|WARN)\b|^\S*Warning\b|warning:", re.I)


def level_of(line: str) -> int:
    """How serious a printed line is: an error or a traceback's line, a warning, else INFO."""
    if _ERROR.search(line):
        return logging.ERROR
    if _WARNING.search(line):
        return logging.WARNING
    return logging.INFO


def visible(chunk: str) -> str:
    """What a terminal would show of a line: the last ``\\r``-separated part (a progress bar
    redraws itself with carriage returns), without colour codes."""
    part = chunk.rstrip("\r").rsplit("\r", 1)[-1]
    return re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", part).rstrip()


class OutputReader:
    """The parent's side: a pipe for the child's output and a thread that logs its lines."""

    def __init__(self, ctx: Any, name: str) -> None:
        self.reader, self.writer = ctx.Pipe(duplex=False)
        self.log = logging.getLogger(OUTPUT_LOGGER)
        self.name = name
        self._thread = threading.Thread(target=self._read, name=f"{name}-output", daemon=True)

    def started(self) -> None:
        """The child has its end: close the parent's copy of it (EOF once the child's processes
        are gone) and start reading."""
        self.writer.close()
        self._thread.start()

    def _read(self) -> None:
        pending = b""
        fd = self.reader.fileno()
        while True:
            try:
                data = os.read(fd, 65536)
            except OSError:
                break
            if not data:
                break
            *lines, pending = (pending + data).split(b"\n")
            for line in lines:
                self._log(line)
        if pending:
            self._log(pending)
        with contextlib.suppress(OSError):
            self.reader.close()

    def _log(self, raw: bytes) -> None:
        line = visible(raw.decode("utf-8", errors="replace"))
        if line:
            self.log.log(level_of(line), "[%s] %s", self.name, line)

    def join(self, timeout: float) -> None:
        """Wait for the last lines (the child and what it started have ended)."""
        if self._thread.is_alive():
            self._thread.join(timeout)


def redirect_output(writer: Connection | None) -> None:
    """The child's side: its file descriptors 1 and 2 become the pipe, inherited by every
    process it starts. Progress bars are drawn into it as before (their last frame of each line
    reaches the log): tqdm's ``TQDM_DISABLE`` would break vLLM, which divides by a disabled
    bar's elapsed time (0) after each ``generate``."""
    if writer is None:
        return
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os.dup2(writer.fileno(), 1)
    os.dup2(writer.fileno(), 2)
    writer.close()


def quiet_resource_tracker(ctx: Any) -> None:
    """Start multiprocessing's resource tracker, which every spawned child shares with this
    process, with its stderr on a pipe logged as the engine's output, instead of the console.

    It warns of the semaphores and shared memory vLLM's killed processes left ("There appear to
    be 1 leaked shared_memory objects to clean up at shutdown") and cleans them up, when this
    process ends: that last warning is then dropped (its reader is gone), not printed. Nothing
    changes where the tracker is already running (started by another library first).
    """
    from multiprocessing import resource_tracker

    reader = OutputReader(ctx, "resource-tracker")
    # The tracker is started with this process's file descriptor 2 as its stderr (whatever
    # sys.stderr is), so the pipe stands in for descriptor 2 while it starts.
    with contextlib.suppress(Exception):
        sys.stderr.flush()
    saved = os.dup(2)
    os.dup2(reader.writer.fileno(), 2)
    try:
        resource_tracker.ensure_running()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
    reader.started()  # EOF at once where the tracker was already running
