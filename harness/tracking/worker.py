"""MLflow in a process of its own: ``python -m harness.tracking.worker``, fed through a pipe.

Why a process and not a thread: importing MLflow (about 2 s of CPU) and its SQLite or HTTP work
would hold the GIL and Python's import locks while the harness imports torch and runs lm-eval's
loop, so a thread serialises with the evaluation instead of overlapping it. Once the parent run
is open the worker runs on a core only when the evaluation leaves one idle (``demote``), until
the harness gives it its priority back to finish (``promote``); the harness never imports
MLflow.

The pipe carries pickles both ways (both ends are this module, one Python): down, the ``Target``
and then lists of records (``None`` to close); up, the writer's reports, the worker's log records
(``("log", logger, level, text)``, re-emitted by the harness so that its console and log file
decide where they go) and ``("closed",)`` last; the harness's reader adds ``("gone",)`` when the
process has ended, however it ended. A harness that dies without closing leaves the
worker an end of file: it writes what it got, marks the open runs KILLED and exits.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from harness.secrets import mask
from harness.tracking.writer import MlflowWriter, Report, Target

log = logging.getLogger(__name__)

NICENESS = 19
"""How much lower the worker's priority is: the evaluation gets the cores first."""
CLOSE_PATIENCE_S = 60.0
"""How long the harness waits at its end for a worker that cannot be given a core (an
unprivileged user on a node kept busy by others); the worker then finishes on its own."""


def demote() -> None:
    """This process takes a core only when the evaluation leaves one idle (``SCHED_IDLE``)."""
    with contextlib.suppress(OSError, AttributeError):  # AttributeError: not Linux
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    with contextlib.suppress(OSError):
        os.nice(NICENESS)  # where SCHED_IDLE is refused


def promote(pid: int) -> bool:
    """Give the worker ``pid`` a normal priority back, so that it catches up at the run's end
    even on a node whose cores others keep busy (``SCHED_IDLE`` would starve it there). Allowed
    to root, or where ``RLIMIT_NICE`` permits; False where refused."""
    try:
        os.sched_setscheduler(pid, os.SCHED_OTHER, os.sched_param(0))
        os.setpriority(os.PRIO_PROCESS, pid, 0)
    except (OSError, AttributeError):
        return False
    return True


class WorkerProcess:
    """The harness's end of the pipe to one worker process."""

    def __init__(self, target: Target, report: Report) -> None:
        self.report = report
        self.closed = False
        """The worker said ``closed``: everything sent was applied."""
        package_root = str(Path(__file__).resolve().parents[2])  # the folder holding harness/
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "harness.tracking.worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self._down: IO[bytes] = self.proc.stdin
        self._up: IO[bytes] = self.proc.stdout
        self.send(target)
        self._reader = threading.Thread(target=self._read, name="mlflow-replies", daemon=True)
        self._reader.start()

    def send(self, item: Any) -> None:
        """One pickle down the pipe; a worker that is gone is reported by the reader."""
        try:
            pickle.dump(item, self._down, protocol=pickle.HIGHEST_PROTOCOL)
            self._down.flush()
        except (BrokenPipeError, OSError, ValueError):
            pass

    def close(self, patience_s: float = CLOSE_PATIENCE_S) -> bool:
        """Ask the worker to finish, give it a normal priority, and wait until it has; False
        when it is still writing after ``patience_s`` (it could not be given a core: it then
        finishes on its own after the harness has ended)."""
        self.send(None)
        with contextlib.suppress(OSError):
            self._down.close()
        promoted = promote(self.proc.pid)
        self._reader.join(None if promoted else patience_s)
        if self._reader.is_alive():
            log.warning(
                "the MLflow worker (pid %d, idle priority on a node whose cores are all busy) "
                "has not caught up after %.0f s; it goes on writing after this run ends. If "
                "MLflow does not show the run whole later: python -m harness.replay <run dir>",
                self.proc.pid,
                patience_s,
            )
            return False
        self.proc.wait()
        return True

    def _read(self) -> None:
        while True:
            try:
                message = pickle.load(self._up)
            except (EOFError, OSError, pickle.UnpicklingError):
                break
            if message[0] == "log":
                _, name, level, text = message
                logging.getLogger(name).log(level, "%s", text)
            elif message[0] == "closed":
                self.closed = True
            else:
                self.report(message)
        code = self.proc.wait()
        if not self.closed:
            log.warning(
                "the MLflow worker process ended early (exit code %s); tracking is off for the "
                "rest of this run, results are still written to the run directory. Log them "
                "later: python -m harness.replay <run dir>",
                code,
            )
            self.report(("failed", f"the MLflow worker process ended early (exit code {code})"))
        self.report(("gone",))


class _Forward(logging.Handler):
    """Sends the worker's log records up the pipe."""

    def __init__(self, send: Callable[[tuple[Any, ...]], None]) -> None:
        super().__init__(logging.INFO)
        self.send = send

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if record.name.startswith("harness"):
                text = self.format(record)
            else:  # MLflow's and SQLAlchemy's own: one line (the writer's warning says the rest)
                lines = record.getMessage().strip().splitlines()
                text = f"{record.name}: {lines[0] if lines else ''}"
            self.send(("log", record.name, record.levelno, mask(text)))
        except Exception:
            self.handleError(record)


def main() -> None:
    """Apply what comes down stdin until it says stop or ends."""
    up = os.fdopen(os.dup(1), "wb")  # the replies' own copy of stdout ...
    os.dup2(2, 1)  # ... so that whatever prints to stdout cannot corrupt them
    for sig in (signal.SIGINT, signal.SIGTERM):  # the harness decides how a run ends
        signal.signal(sig, signal.SIG_IGN)
    # At a normal priority until the parent run is open (MLflow imported, the store open, the
    # run visible with its start time), overlapping the model load; then SCHED_IDLE (demote):
    # tracking takes a core only when the evaluation leaves one idle, and the harness gives it
    # its priority back at the end (promote) so that it catches up even on a busy node.
    demoted = False
    lock = threading.Lock()

    def send(message: tuple[Any, ...]) -> None:
        # A harness killed (SIGKILL) or gone reads nothing any more: the worker still writes
        # what it was sent and ends the open runs KILLED (its stdin then ends).
        with lock, contextlib.suppress(BrokenPipeError, OSError, ValueError):
            pickle.dump(message, up, protocol=pickle.HIGHEST_PROTOCOL)
            up.flush()

    logging.basicConfig(level=logging.INFO, handlers=[_Forward(send)], force=True)
    down = sys.stdin.buffer
    writer = MlflowWriter(pickle.load(down), send)
    while True:
        try:
            ops = pickle.load(down)
        except (EOFError, pickle.UnpicklingError):  # the harness is gone (killed mid-write too)
            writer.abandon()
            break
        if ops is None:
            break
        writer.apply_all(ops)
        if not demoted and (writer.parent_id is not None or not writer.enabled):
            demote()
            demoted = True
    send(("closed",))
    # Everything is written and committed; the interpreter's own teardown with MLflow loaded
    # (its atexit hooks, SQLAlchemy's pools) took about 1 s that the harness would wait for.
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
