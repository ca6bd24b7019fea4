"""The resident loop: every dataset is evaluated by lm-eval against the one engine already loaded.

Up to ``Plan.datasets_at_once`` datasets are in flight together (never more than are left to
evaluate), their requests merged by the run's gate (``harness/evaluation/gate.py``); each one's
evaluation is ``harness/evaluation/dataset.py``. A dataset that raises is recorded as that
dataset's failure and the loop goes on.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any

from harness.config.schema import RunConfig
from harness.console import say
from harness.engines.base import Engine
from harness.evaluation.dataset import (
    Evaluation,
    Pending,
    evaluate_dataset,
    journal_of,
    write_result,
)
from harness.evaluation.gate import EngineGate, in_flight
from harness.evaluation.tasks import PreparedDataset
from harness.planning.plan import Plan
from harness.record.outcome import DatasetOutcome
from harness.record.rundir import RunDirectory
from harness.record.store import ResultStore
from harness.tracking import Tracker

__all__ = ["Pending", "evaluate_all", "work_list", "write_result"]


def work_list(
    run: RunConfig, plan: Plan, datasets: dict[str, PreparedDataset], store: ResultStore
) -> dict[str, Pending]:
    """Key every dataset and look for its stored result (unless ``rerun`` is set)."""
    from harness.evaluation.fingerprint import dataset_key, fingerprint, journal_key

    work = {}
    for name, dataset in datasets.items():
        key = dataset_key(run, plan, dataset)
        fp = fingerprint(key)
        stored = None if run.rerun else store.load(name, fp)
        work[name] = Pending(dataset, key, fp, stored, fingerprint(journal_key(key)))
        if run.rerun:  # evaluated again from scratch: no answer of an earlier run is reused
            journal_of(store, name, work[name]).delete()
    return work


def evaluate_all(
    engine: Engine | None,
    work: dict[str, Pending],
    run: RunConfig,
    plan: Plan,
    run_dir: RunDirectory,
    store: ResultStore,
    tracker: Tracker,
    on_event: Callable[..., None] | None = None,
) -> list[DatasetOutcome]:
    """Evaluate every dataset with the resident engine, storing and tracking each as it ends.

    Datasets with a stored result are taken from the store (``engine`` may be None when all are).
    An exception in one dataset is recorded as that dataset's failure and the loop goes on.
    ``on_event(event, **fields)`` hears ``dataset_started``, ``dataset_done``, ``dataset_failed``
    and ``dataset_resumed`` (harness/record/events.py).
    """
    left = sum(item.stored is None for item in work.values())
    at_once = max(1, min(plan.datasets_at_once, left))
    gate = EngineGate(engine, at_once) if engine is not None else None
    if at_once > 1:
        say(f"{at_once} datasets at once against the resident engine (max_concurrent_datasets)")
    emit = _serialized(on_event or (lambda event, **fields: None))
    ev = Evaluation(engine, gate, run, plan, run_dir, store, tracker, emit, total=len(work))
    calls = [
        functools.partial(evaluate_dataset, ev, i, name, item)
        for i, (name, item) in enumerate(work.items(), start=1)
    ]
    try:
        return in_flight(calls, at_once)
    finally:
        if gate is not None:
            gate.close()


def _serialized(emit: Callable[..., None]) -> Callable[..., None]:
    """``emit`` for datasets in flight together: one event at a time, whole."""
    lock = threading.Lock()

    def locked(event: str, **fields: Any) -> None:
        with lock:
            emit(event, **fields)

    return locked
