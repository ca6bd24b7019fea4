"""Where the datasets in flight meet the one engine: their slices of requests, merged into one
call per request type, made from one thread of its own.

With ``max_concurrent_datasets`` above 1, every dataset's ``JournaledLM`` sends its slices here
instead of to the engine. While the engine answers one call, the slices that arrive queue up; the
next call takes every queued slice of the first one's request type, so the engine batches the
requests of several datasets together (vLLM's scheduler fills its batch across them). Each
request keeps its own arguments, generation settings and stop strings included: lm-eval's engines
read them per request (its vLLM model builds one ``SamplingParams`` per request and cuts each
answer at that request's own ``until``), so nothing of one dataset's settings reaches another's.

A call that fails fails every slice in it when the engine is gone (``EngineDied``, a stall); any
other error is one dataset's own, so its slices are asked again one by one and only the slice
that raises fails (a dataset that fails does not take the others in flight down).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass
class _Slice:
    op: str
    requests: list[Any]
    answers: list[Any] = field(default_factory=list)
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)


class EngineGate:
    """The one way to the engine's ``lm`` for the datasets in flight together."""

    def __init__(self, lm: Any) -> None:
        self._lm = lm
        self._cond = threading.Condition()
        self._queue: list[_Slice] = []
        self._thread: threading.Thread | None = None
        self._closed = False

    def send(self, op: str, requests: list[Any]) -> list[Any]:
        """The engine's answers to ``requests`` (one slice of one dataset), in order."""
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
        return item.answers

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
        from harness.engines.process import EngineDied

        requests = [r for s in batch for r in s.requests]
        try:
            answers = list(getattr(self._lm, op)(requests, disable_tqdm=True))
            if len(answers) != len(requests):
                raise RuntimeError(f"the engine answered {len(answers)} of {len(requests)}")
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
            item.answers = answers[start : start + len(item.requests)]
            start += len(item.requests)
            item.done.set()


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
