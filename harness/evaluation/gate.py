"""Where the datasets in flight meet the one engine: every slice of requests a dataset sends goes
through the gate, to ``engine.answer``.

A gate for one dataset at a time is a pass-through: the slice is answered in the caller's
thread. A gate for several (``Plan.datasets_at_once`` above 1) merges their slices into one call
per request type, made from one thread of its own: while the engine answers one call, the slices
that arrive queue up; the next call takes every queued slice of the first one's request type, so
the engine batches the requests of several datasets together (vLLM's scheduler fills its batch
across them). Each request keeps its own arguments, generation settings and stop strings
included: lm-eval's engines read them per request (its vLLM model builds one ``SamplingParams``
per request and cuts each answer at that request's own ``until``), so nothing of one dataset's
settings reaches another's. Each slice gets its own part of the call's ``Answered`` (its
answers and their token counts).

A call that fails fails every slice in it when the engine is gone (``EngineDied``, a stall); any
other error is one dataset's own, so its slices are asked again one by one and only the slice
that raises fails (a dataset that fails does not take the others in flight down).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from harness.engines.base import Answered, Engine, EngineDied

T = TypeVar("T")


@dataclass
class _Slice:
    op: str
    requests: list[Any]
    answered: Answered | None = None
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)


class EngineGate:
    """The one way to the engine for the datasets of a run.

    Args:
        engine: the resident engine; its ``answer`` is the only thing the gate calls.
        at_once: how many datasets may send at once; 1 makes the gate a pass-through.
    """

    def __init__(self, engine: Engine, at_once: int = 1) -> None:
        self.engine = engine
        self.at_once = at_once
        self._cond = threading.Condition()
        self._queue: list[_Slice] = []
        self._thread: threading.Thread | None = None
        self._closed = False

    def send(self, op: str, requests: Sequence[Any]) -> Answered:
        """The engine's answers to ``requests`` (one slice of one dataset), in order, with the
        tokens each read and produced."""
        if self.at_once <= 1:  # nothing to merge with: no queue, no thread
            return _answered(self.engine, op, list(requests))
        item = _Slice(op, list(requests))
        with self._cond:
            if self._closed:
                raise RuntimeError("the engine gate is closed")
            self._queue.append(item)
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name="engine-gate", daemon=True)
                self._thread.start()
            self._cond.notify()
        item.done.wait()
        if item.error is not None:
            raise item.error
        assert item.answered is not None
        return item.answered

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()

    def _serve(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if not self._queue:
                    return
                op = self._queue[0].op
                batch = [s for s in self._queue if s.op == op]
                self._queue = [s for s in self._queue if s.op != op]
            self._answer(op, batch)

    def _answer(self, op: str, batch: list[_Slice]) -> None:
        requests = [r for s in batch for r in s.requests]
        try:
            answered = _answered(self.engine, op, requests)
        except BaseException as err:  # handed to the dataset threads
            if len(batch) > 1 and not isinstance(err, EngineDied | TimeoutError):
                for item in batch:  # one dataset's error stays that dataset's
                    self._answer(op, [item])
                return
            for item in batch:
                item.error = err
                item.done.set()
            return
        start = 0
        for item in batch:
            item.answered = answered.part(start, start + len(item.requests))
            start += len(item.requests)
            item.done.set()


def _answered(engine: Engine, op: str, requests: list[Any]) -> Answered:
    answered = engine.answer(op, requests)
    if len(answered.answers) != len(requests):
        raise RuntimeError(f"the engine answered {len(answered.answers)} of {len(requests)}")
    return answered


def in_flight(calls: Sequence[Callable[[], T]], at_once: int) -> list[T]:
    """Every call's result, in order, with up to ``at_once`` of them running together (each in
    a daemon thread: a run interrupted here ends without waiting for them). One at a time, they
    run in this thread."""
    if at_once <= 1:
        return [call() for call in calls]
    results: dict[int, T] = {}
    errors: list[BaseException] = []
    slots = threading.Semaphore(at_once)

    def run(index: int, call: Callable[[], T]) -> None:
        try:
            results[index] = call()
        except BaseException as err:  # raised again in the caller's thread
            errors.append(err)
        finally:
            slots.release()

    threads = []
    for index, call in enumerate(calls):
        slots.acquire()
        if errors:
            break
        thread = threading.Thread(target=run, args=(index, call), daemon=True)
        thread.start()
        threads.append(thread)
    for thread in threads:
        while thread.is_alive():  # joined in steps: Ctrl-C and SIGTERM still reach this thread
            thread.join(0.5)
    if errors:
        raise errors[0]
    return [results[i] for i in range(len(calls))]
