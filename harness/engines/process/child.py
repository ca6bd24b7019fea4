"""The engine's own process: built with ``spawn``, leader of its process group, never orphaned.

See ``harness.engines.process.engine`` for why; this is the child's side: guards that stop the
whole group when the harness dies, and the loop that answers the parent's operations.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing
import os
import signal
import threading
import time
from multiprocessing.connection import Connection
from typing import Any

from harness.engines.base import load_factory
from harness.engines.process.output import redirect_output
from harness.engines.process.serving import error_reply, serve

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
"""``linux/prctl.h``: deliver a signal to this process when its parent thread exits."""
WATCHDOG_INTERVAL_S = 0.5
"""How often the child checks that its parent is still alive."""
STOP_GRACE_S = 10.0
"""How long vLLM's processes get to exit on SIGTERM before the group is SIGKILLed."""


def _set_parent_death_signal(sig: int) -> None:
    """Ask Linux to send ``sig`` to this process when its parent exits (no-op elsewhere)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0) != 0:
            log.warning("prctl(PR_SET_PDEATHSIG) failed: errno %d", ctypes.get_errno())
    except (OSError, AttributeError) as err:  # not Linux: the watchdog thread still works
        log.warning("prctl unavailable (%s); relying on the parent watchdog", err)


_stopping = threading.Lock()


def _stop_group(grace: float = STOP_GRACE_S) -> None:
    """Stop this engine process and everything in its process group, for certain.

    vLLM's EngineCore gets SIGTERM first (it then takes its workers down and reaps them), up to
    ``grace`` seconds; then the whole group, this process included, gets SIGKILL.
    """
    if not _stopping.acquire(blocking=False):
        return  # another thread is already at it
    try:
        children = multiprocessing.active_children()
        for child in children:
            if child.pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for child in children:
            child.join(max(0.0, deadline - time.monotonic()))
    finally:
        os.killpg(os.getpgrp(), signal.SIGKILL)


def _watch_parent(parent_pid: int) -> None:
    while True:
        if os.getppid() != parent_pid:
            _stop_group()
        time.sleep(WATCHDOG_INTERVAL_S)


def _on_term(signum: int, frame: Any) -> None:
    _stop_group()


def _guard_against_orphaning(parent_pid: int) -> None:
    """Make this process, and the vLLM processes it will start, die with the harness process."""
    os.setpgrp()  # a group of our own: vLLM's EngineCore and workers inherit it
    _set_parent_death_signal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, _on_term)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        _stop_group(grace=0)
    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True).start()


def child_main(
    conn: Connection,
    parent_pid: int,
    factory: str,
    args: tuple[Any, ...],
    output: Connection | None = None,
) -> None:
    """The engine process: build the engine, then answer the parent until it closes or dies.

    Args:
        output: where this process and every one it starts print (the parent logs it,
            ``harness.engines.process.output``); None keeps the parent's stdout and stderr.
    """
    redirect_output(output)
    _guard_against_orphaning(parent_pid)
    try:
        from setproctitle import setproctitle

        setproctitle(f"harness::engine {factory.rpartition(':')[2]}")
    except ImportError:
        pass
    engine = None
    try:
        try:
            engine = load_factory(factory)(*args)
            signal.signal(signal.SIGTERM, _on_term)  # in case building it replaced ours
            conn.send(("ready", engine.describe()))
        except BaseException as err:
            conn.send(error_reply(err))
            return
        while True:
            try:
                op, payload = conn.recv()
            except (EOFError, OSError):  # the parent is gone
                break
            if op == "close":
                break
            try:
                conn.send(("ok", serve(engine, op, payload)))
            except Exception as err:
                conn.send(error_reply(err))
    finally:
        if engine is not None:
            try:
                engine.close()
            except Exception:
                log.exception("closing the engine")
        for child in multiprocessing.active_children():
            child.join(STOP_GRACE_S)
        with contextlib.suppress(OSError, ValueError):
            conn.send(("closed", None))
