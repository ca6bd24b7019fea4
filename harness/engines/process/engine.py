"""An engine in its own process, and the thin lm-eval ``LM`` the evaluation loop holds instead.

Why a process of its own: vLLM cannot build a second ``LLM`` in a process that held one (upstream
issues 9727, 18806), and a vLLM ``LLM`` spawns an EngineCore and one worker per rank that outlive
their parent when it is killed (measured: orphans holding gigabytes, minutes later). Here the
engine is built in a child process started with the ``spawn`` method; the child leads a process
group of its own, which vLLM's EngineCore and workers join, so the whole engine is one group:

- ``close()`` asks the child to shut vLLM down and exit, then kills whatever is left of its
  group (nothing, normally);
- if the harness process dies (even SIGKILL), the kernel sends the child SIGTERM
  (``prctl(PR_SET_PDEATHSIG)``); a watchdog thread polling the parent pid backs that up. Either
  way the child stops vLLM's processes (SIGTERM, so the EngineCore takes its workers down) and
  then SIGKILLs its whole group, itself included;
- if the child itself dies, the parent kills its group, so its EngineCore cannot linger.

What crosses the pipe is small: lm-eval's ``HFLM`` and ``VLLM`` read only ``Instance.args`` in
their request methods (the context, continuation and generation arguments), so ``answer`` sends
those tuples and gets back, in one reply, the answers with each request's token counts (the
tokenizer is in the child); task documents never cross.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import Any

from harness.engines.base import (
    HEALTH_TIMEOUT_S,
    REQUEST_TYPES,
    Answered,
    EngineDied,
    EngineError,
    StallWatch,
    stalled,
)
from harness.engines.process.child import STOP_GRACE_S, child_main
from harness.engines.process.output import OutputReader, quiet_resource_tracker
from harness.engines.process.serving import as_args

log = logging.getLogger(__name__)


def _send(conn: Connection, message: Any) -> None:
    """``conn.send`` that fails with ``BrokenPipeError`` when the engine process is gone, even
    where SIGPIPE kills (the harness CLI restores its default action for ``| head``): SIGPIPE is
    blocked in this thread for the write, and one it raised is consumed before unblocking."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGPIPE})
    try:
        conn.send(message)
    finally:
        if signal.SIGPIPE not in old:
            while signal.sigtimedwait({signal.SIGPIPE}, 0) is not None:
                pass
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


class EngineProcess:
    """An engine (``factory(*args)``, built in a child process) behind the ``RemoteEngine``
    protocol.

    Args:
        factory: ``"module:Class"`` of an in-process engine
            (``harness.engines.inprocess.vllm:VLLMEngine``); it is imported and called in the
            child, so its arguments must pickle.
        args: its arguments.
        start_timeout: seconds to wait for the engine to be built; None waits as long as the
            child lives.
        stall_timeout_s: the stall watchdog's limit on one ``answer`` (None or 0: no limit),
            grown with the slowest answer (``StallWatch``).
    """

    def __init__(
        self,
        factory: str,
        *args: Any,
        start_timeout: float | None = None,
        stall_timeout_s: float | None = None,
    ) -> None:
        self.factory, self.args, self.start_timeout = factory, args, start_timeout
        self.stall = StallWatch(stall_timeout_s)
        self._lock = threading.RLock()  # revive() holds it while _start() may close()
        self.builds = 0
        """Engines built so far: 1, plus one per rebuild."""
        self.closed = False
        self._start()
        from harness.engines.process.proxy import ProxyLM  # imports lm-eval

        self.lm: Any = ProxyLM(self)

    def _start(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        quiet_resource_tracker(ctx)
        self._conn, child_conn = ctx.Pipe()
        name = f"harness-engine-{self.factory.rpartition(':')[2]}"
        self._output = OutputReader(ctx, name.removeprefix("harness-"))  # its prints: logged
        self._proc = ctx.Process(
            target=child_main,
            args=(child_conn, os.getpid(), self.factory, self.args),
            kwargs={"output": self._output.writer},
            name=name,
            daemon=False,  # a daemonic process may not start vLLM's own processes
        )
        self._proc.start()
        child_conn.close()
        self._output.started()
        self.pid: int = self._proc.pid or 0
        self.builds += 1
        try:
            self.facts: dict[str, Any] = self._receive(self.start_timeout)
            # The first request to a fresh vLLM engine warms it up (3-25 s measured): part of
            # loading it, not of the first dataset's evaluation.
            self.check()
        except BaseException:
            self.close()
            raise

    def check(self, timeout: float = HEALTH_TIMEOUT_S) -> None:
        """The health check: one request for one generated token. Raises when the engine's
        process is dead (``EngineDied``), fails the request (``EngineError``) or hangs."""
        self.call("ping", None, timeout=timeout)

    def revive(self, rebuild: bool = True) -> bool:
        """Check the engine; if it is unhealthy and ``rebuild`` allows, replace its process with a
        freshly built one (the old one's group is killed first). Returns True when it rebuilt.

        The proxy ``lm`` stays the same object, so whoever holds it (lm-eval) goes on using the
        new engine.
        """
        try:
            self.check()
            return False
        except (EngineDied, EngineError, TimeoutError) as err:
            if not rebuild or self.closed:
                raise
            log.warning("engine unhealthy (%s): rebuilding it", err)
        with self._lock:
            self._stop_process()
            self._start()
        return True

    def _receive(self, timeout: float | None = None) -> Any:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self._conn.poll(0.2):
                try:
                    reply = self._conn.recv()
                except (EOFError, OSError) as err:
                    raise self._died() from err
                kind = reply[0]
                if kind in ("ok", "ready"):
                    return reply[1]
                if kind == "error":
                    raise EngineError(reply[1], reply[2], reply[3])
                raise EngineDied(f"engine process sent {kind!r} while a reply was awaited")
            if not self._proc.is_alive():
                raise self._died()
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"engine process gave no answer within {timeout:.0f}s")

    def _died(self) -> EngineDied:
        self._proc.join(1)
        code = self._proc.exitcode
        how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit {code}"
        self._sweep()
        return EngineDied(f"the engine process (pid {self.pid}) died ({how})")

    def call(self, op: str, payload: Any = None, timeout: float | None = None) -> Any:
        """Send one operation to the engine and wait for its answer."""
        with self._lock:
            if self.closed:
                raise EngineDied("the engine is closed")
            try:
                _send(self._conn, (op, payload))
            except (BrokenPipeError, OSError) as err:
                raise self._died() from err
            return self._receive(timeout)

    def kill(self) -> None:
        """Kill the engine's process group at once (a stalled engine; ``revive`` rebuilds it)."""
        self._sweep()

    def alive(self) -> bool:
        return not self.closed and self._proc.is_alive()

    def describe(self) -> dict[str, Any]:
        return {**self.facts, "process": "own", "pid": self.pid, "builds": self.builds}

    def answer(self, op: str, requests: Sequence[Any]) -> Answered:
        """One round trip: the child answers ``requests`` and counts their tokens. No answer
        within the stall limit is a stalled engine: it is killed, and ``EngineDied`` raised."""
        if op not in REQUEST_TYPES:
            raise ValueError(f"unknown request type {op!r}: one of {', '.join(REQUEST_TYPES)}")
        if not requests:
            return Answered([], [], [])
        limit, began = self.stall.limit, time.monotonic()
        try:
            answered: Answered = self.call("answer", (op, as_args(requests)), timeout=limit)
        except TimeoutError as err:  # the stall watchdog: no answer, however long it waits
            self.kill()
            raise stalled(limit) from err
        self.stall.answered(time.monotonic() - began)
        return answered

    def close(self, timeout: float = 60.0) -> None:
        """Shut the engine down and wait for its process; afterwards none of its processes
        (vLLM's EngineCore and workers included) is left. Safe to call more than once."""
        if self.closed:
            return
        with self._lock:
            self.closed = True
            self._stop_process(timeout)

    def _stop_process(self, timeout: float = 60.0) -> None:
        if self._proc.is_alive():
            with contextlib.suppress(BrokenPipeError, OSError):
                _send(self._conn, ("close", None))
            self._proc.join(timeout)
        if self._proc.is_alive():
            log.warning("engine process %d did not exit in %.0fs: stopping it", self.pid, timeout)
            self._proc.terminate()  # SIGTERM: the child stops its group
            self._proc.join(STOP_GRACE_S + 5)
        self._sweep()
        self._conn.close()
        self._output.join(2.0)  # its last lines (the group is gone: the pipe ends)

    def _sweep(self) -> None:
        """SIGKILL whatever is left in the engine's process group (its pgid is its pid)."""
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join(5)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
