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

What crosses the pipe is small: lm-eval reads only ``Instance.args`` in its request methods
(shared/DESIGN.md), so the proxy sends those tuples and gets the answers back; task documents
never cross.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import logging
import multiprocessing
import os
import signal
import threading
import time
import traceback
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import Any

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
"""``linux/prctl.h``: deliver a signal to this process when its parent thread exits."""
WATCHDOG_INTERVAL_S = 0.5
"""How often the child checks that its parent is still alive."""
STOP_GRACE_S = 10.0
"""How long vLLM's processes get to exit on SIGTERM before the group is SIGKILLed."""
REQUEST_METHODS = ("loglikelihood", "loglikelihood_rolling", "generate_until")
HEALTH_TIMEOUT_S = 300.0
"""Longest a health check may take: the first request to a fresh vLLM engine warms it up
(measured 3-25 s on 2 CPU cores)."""
PING = ("1", {"max_gen_toks": 1, "until": [], "do_sample": False})
"""The health check's request: one greedy token after a one-character prompt."""


class EngineDied(RuntimeError):
    """The engine's process ended while the harness still needed it."""


class EngineError(RuntimeError):
    """An exception raised inside the engine's process; its traceback is in ``remote``."""

    def __init__(self, error_type: str, message: str, remote: str) -> None:
        super().__init__(f"{error_type}: {message}")
        self.error_type = error_type
        self.remote = remote


# ---------------------------------------------------------------- the child (engine) process


class _Request:
    """What lm-eval's request methods read of an ``Instance``: its ``args`` (and, for a
    ``VLLM`` with thinking enabled, a task name)."""

    __slots__ = ("args", "task_name")

    def __init__(self, args: tuple[Any, ...]) -> None:
        self.args = args
        self.task_name = None


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


def _load(factory: str) -> Any:
    module, _, name = factory.partition(":")
    return getattr(importlib.import_module(module), name)


def _error(err: BaseException) -> tuple[str, str, str, str]:
    text = str(err).strip()
    return ("error", type(err).__name__, text, traceback.format_exc())


def _serve(engine: Any, op: str, payload: Any) -> Any:
    if op in REQUEST_METHODS:
        requests = [_Request(tuple(args)) for args in payload]
        return list(getattr(engine.lm, op)(requests, disable_tqdm=True))
    if op == "count_tokens":
        return engine.count_tokens(payload)
    if op == "describe":
        return engine.describe()
    if op == "attr":  # tokenizer_name, max_length, ...: plain values only
        return getattr(engine.lm, payload)
    if op == "call":  # chat_template(...), apply_chat_template(...), get_model_info()
        name, args, kwargs = payload
        return getattr(engine.lm, name)(*args, **kwargs)
    if op == "ping":  # the health check: a one-token request through the model
        return engine.lm.generate_until([_Request(PING)], disable_tqdm=True)
    raise ValueError(f"unknown engine operation {op!r}")


def _child_main(conn: Connection, parent_pid: int, factory: str, args: tuple[Any, ...]) -> None:
    _guard_against_orphaning(parent_pid)
    try:
        from setproctitle import setproctitle

        setproctitle(f"harness::engine {factory.rpartition(':')[2]}")
    except ImportError:
        pass
    engine = None
    try:
        try:
            engine = _load(factory)(*args)
            signal.signal(signal.SIGTERM, _on_term)  # in case building it replaced ours
            conn.send(("ready", engine.describe()))
        except BaseException as err:
            conn.send(_error(err))
            return
        while True:
            try:
                op, payload = conn.recv()
            except (EOFError, OSError):  # the parent is gone
                break
            if op == "close":
                break
            try:
                conn.send(("ok", _serve(engine, op, payload)))
            except Exception as err:
                conn.send(_error(err))
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


# ---------------------------------------------------------------- the harness (parent) side


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
    """An engine (``factory(*args)``, built in a child process) behind the ``Engine`` protocol.

    Args:
        factory: ``"module:Class"`` of an in-process engine (``harness.engines.vllm:VLLMEngine``);
            it is imported and called in the child, so its arguments must pickle.
        args: its arguments.
        start_timeout: seconds to wait for the engine to be built; None waits as long as the
            child lives.
    """

    def __init__(self, factory: str, *args: Any, start_timeout: float | None = None) -> None:
        self.factory, self.args, self.start_timeout = factory, args, start_timeout
        self._lock = threading.RLock()  # revive() holds it while _start() may close()
        self.builds = 0
        """Engines built so far: 1, plus one per rebuild."""
        self.closed = False
        self._start()
        self.lm: Any = ProxyLM(self)

    def _start(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conn, child_conn = ctx.Pipe()
        self._proc = ctx.Process(
            target=_child_main,
            args=(child_conn, os.getpid(), self.factory, self.args),
            name=f"harness-engine-{self.factory.rpartition(':')[2]}",
            daemon=False,  # a daemonic process may not start vLLM's own processes
        )
        self._proc.start()
        child_conn.close()
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

        The proxy ``lm`` stays the same object, so whoever holds it (lm-eval, the request meter)
        goes on using the new engine.
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

    def alive(self) -> bool:
        return not self.closed and self._proc.is_alive()

    def describe(self) -> dict[str, Any]:
        return {**self.facts, "process": "own", "pid": self.pid, "builds": self.builds}

    def count_tokens(self, texts: Sequence[str]) -> int:
        return int(self.call("count_tokens", list(texts))) if texts else 0

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

    def _sweep(self) -> None:
        """SIGKILL whatever is left in the engine's process group (its pgid is its pid)."""
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join(5)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)


def _lm_base() -> type:
    from lm_eval.api.model import LM

    return LM


class ProxyLM(_lm_base()):  # type: ignore[misc]
    """The lm-eval ``LM`` the evaluation loop holds; every request goes to the engine process.

    ``simple_evaluate`` needs ``isinstance(lm, LM)``, the three request methods, and ``rank`` /
    ``world_size`` (the base class answers 0 and 1); chat-template attributes are asked of the
    engine when a run wants them.
    """

    def __init__(self, engine: EngineProcess) -> None:
        super().__init__()
        self._engine = engine

    def loglikelihood(self, requests: list[Any], disable_tqdm: bool = False) -> list[Any]:
        return [tuple(r) for r in self._forward("loglikelihood", requests)]

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[Any]:
        return self._forward("loglikelihood_rolling", requests)

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[Any]:
        return self._forward("generate_until", requests)

    def _forward(self, op: str, requests: list[Any]) -> list[Any]:
        if not requests:
            return []
        answers = self._engine.call(op, [tuple(r.args) for r in requests])
        for request, answer in zip(requests, answers, strict=True):
            self.cache_hook.add_partial(op, request.args, answer)
        return list(answers)

    @property
    def tokenizer_name(self) -> str:
        return str(self._engine.call("attr", "tokenizer_name"))

    def chat_template(self, chat_template: bool | str = False) -> str | None:
        result = self._engine.call("call", ("chat_template", (chat_template,), {}))
        return None if result is None else str(result)

    def apply_chat_template(
        self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True
    ) -> str:
        call = (
            "apply_chat_template",
            (chat_history,),
            {"add_generation_prompt": add_generation_prompt},
        )
        return str(self._engine.call("call", call))
