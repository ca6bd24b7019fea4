"""The resident loop: every dataset is evaluated by lm-eval against the one engine already loaded.

A dataset that raises is recorded as that dataset's failure and the loop goes on.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from harness.config.evaluation import settings_for
from harness.config.schema import RunConfig
from harness.console import quiet_lm_eval_git_probe, say
from harness.engines.base import Engine, RequestMeter
from harness.evaluation.gate import EngineGate, in_flight
from harness.evaluation.tasks import PreparedDataset, leaf_tasks
from harness.planning.plan import Plan
from harness.record.files import DiskFull
from harness.record.journal import RequestJournal
from harness.record.metrics import headline_entry, is_score, metric_items
from harness.record.outcome import DatasetOutcome
from harness.record.rundir import RunDirectory
from harness.record.store import ResultStore
from harness.tracking import Tracker
from harness.tracking.rundir import open_child, track_outcome

log = logging.getLogger(__name__)


def run_lm_eval(lm: Any, dataset: PreparedDataset, run: RunConfig) -> dict[str, Any]:
    """One ``lm_eval.simple_evaluate`` call for one dataset against the resident ``lm``."""
    import lm_eval

    quiet_lm_eval_git_probe()
    limit = dataset.config.limit
    if limit is not None and limit >= 1:
        limit = int(limit)
    seeds: dict[str, int] = {}
    if run.seed is not None:
        seeds = {
            "random_seed": run.seed,
            "numpy_random_seed": run.seed,
            "torch_random_seed": run.seed,
            "fewshot_random_seed": run.seed,
        }
    tasks = dataset.task if isinstance(dataset.task, list) else [dataset.task]
    settings = settings_for(run, dataset.config)
    names = [str(getattr(leaf, "task_name", "")) for leaf in leaf_tasks(dataset.task)]
    result = lm_eval.simple_evaluate(
        model=lm,
        tasks=tasks,
        num_fewshot=dataset.config.num_fewshot,
        limit=limit,
        bootstrap_iters=run.bootstrap_iters,
        log_samples=run.log_samples or settings.predict_only,  # as lm-eval's CLI: outputs kept
        task_manager=dataset.manager,
        confirm_run_unsafe_code=run.confirm_run_unsafe_code,
        **settings.lm_eval_kwargs(names),
        **seeds,
    )
    if result is None:  # only non-zero ranks get None; we run lm-eval on rank 0
        raise RuntimeError("lm-eval returned no result")
    return dict(result)


def _measure(outcome: DatasetOutcome, meter: RequestMeter, elapsed: float) -> None:
    outcome.eval_time_s = round(elapsed, 4)
    outcome.requests = meter.requests
    outcome.prompt_tokens = meter.prompt_tokens
    outcome.generated_tokens = meter.generated_tokens
    if elapsed > 0:
        outcome.requests_per_s = round(meter.requests / elapsed, 3)
        tokens = meter.prompt_tokens + meter.generated_tokens
        outcome.tokens_per_s = round(tokens / elapsed, 3)


@dataclass
class Pending:
    """A dataset to evaluate, with the key its result is stored under."""

    dataset: PreparedDataset
    key: dict[str, Any]
    fingerprint: str
    stored: dict[str, Any] | None = None
    """The intact stored payload when this exact evaluation already finished (resume)."""
    journal_fingerprint: str = ""
    """The fingerprint its request journal is kept under (``journal_key``: what cannot change an
    answer, such as the data-parallel size, left out)."""


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


def journal_of(store: ResultStore, name: str, item: Pending) -> RequestJournal:
    """The request journal of one dataset, beside the result store."""
    return RequestJournal(store.root / "journal", name, item.journal_fingerprint)


def evaluate_all(
    engine: Engine | None,
    work: dict[str, Pending],
    run: RunConfig,
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
    emit = _serialized(on_event or (lambda event, **fields: None))
    total = len(work)
    evaluated = sum(item.stored is None for item in work.values())
    at_once = concurrency(run, engine, evaluated)
    gate = EngineGate(engine.lm) if engine is not None and at_once > 1 else None
    if at_once > 1:
        say(f"{at_once} datasets at once against the resident engine (max_concurrent_datasets)")

    def one(i: int, name: str, item: Pending) -> DatasetOutcome:
        say(f"[{i}/{total}] {name} ...")
        task = item.dataset.config.task
        settings = {k: getattr(item.dataset.config, k) for k in ("task", "num_fewshot", "limit")}
        settings |= item.key.get("evaluation", {})  # lm-eval's settings it changes
        child = open_child(tracker, name, settings, item.fingerprint, item.stored is not None)
        if item.stored is not None:
            outcome = DatasetOutcome(**item.stored["outcome"])
            outcome.fingerprint = item.fingerprint
            outcome.result_file, outcome.samples_file = write_result(
                run_dir, name, item.stored["result"]
            )
            outcome.resumed = True
            emit(
                "dataset_resumed",
                dataset=name,
                fingerprint=item.fingerprint,
                outcome=outcome.to_dict(),
            )
        else:
            assert engine is not None
            emit("dataset_started", dataset=name, task=task)
            evaluate = functools.partial(
                _evaluate_one, name, item, engine, run, run_dir, store, gate
            )
            outcome = _evaluate_checked(name, engine, evaluate)
            done = {k: getattr(outcome, k) for k in ("eval_time_s", "requests", "tokens_per_s")}
            if outcome.status == "ok":
                emit(
                    "dataset_done",
                    dataset=name,
                    **done,
                    metrics=outcome.metrics,
                    outcome=outcome.to_dict(),
                )
            else:
                error = {"error": outcome.error_type, "message": outcome.error_message}
                emit("dataset_failed", dataset=name, **done, **error, outcome=outcome.to_dict())
        track_outcome(tracker, child, outcome)
        verdict = {"ok": "ok", "failed": f"FAILED ({outcome.error_type})"}[outcome.status]
        how = "stored result reused" if outcome.resumed else f"in {outcome.eval_time_s:.1f}s"
        if outcome.requests_journaled:
            asked = outcome.requests + outcome.requests_journaled
            how += f", {outcome.requests_journaled} of {asked} requests from the journal"
        say(f"[{i}/{total}] {name} {verdict} {how}")
        return outcome

    calls = [
        functools.partial(one, i, name, item)
        for i, (name, item) in enumerate(work.items(), start=1)
    ]
    try:
        return in_flight(calls, at_once)
    finally:
        if gate is not None:
            gate.close()


def concurrency(run: RunConfig, engine: Engine | None, datasets: int) -> int:
    """How many datasets are evaluated at once: ``max_concurrent_datasets``, where ``auto`` is 1
    for an engine in this process and every dataset for one in a process of its own (it has a
    health check, ``revive``), and never more than there are datasets to evaluate."""
    wanted = run.max_concurrent_datasets
    if wanted == "auto":
        wanted = datasets if getattr(engine, "revive", None) is not None else 1
    return max(1, min(int(wanted), datasets))


def _serialized(emit: Callable[..., None]) -> Callable[..., None]:
    """``emit`` for datasets in flight together: one event at a time, whole."""
    lock = threading.Lock()

    def locked(event: str, **fields: Any) -> None:
        with lock:
            emit(event, **fields)

    return locked


def _evaluate_checked(
    name: str, engine: Engine, evaluate: Callable[..., DatasetOutcome]
) -> DatasetOutcome:
    """``evaluate(check)`` of dataset ``name`` with the engine health-checked first (engines in
    their own process: a one-token request); a dead engine is rebuilt once, and a dataset it died
    in is retried once on the rebuilt one."""
    revive: Callable[..., bool] | None = getattr(engine, "revive", None)
    if revive is None:  # in-process engines: nothing to check from outside
        return evaluate()
    rebuilds_left = [1]

    def check() -> None:
        if revive(rebuild=rebuilds_left[0] > 0):
            rebuilds_left[0] -= 1
            say(f"  engine process died: rebuilt it for {name}")

    outcome = evaluate(check)
    if outcome.status == "failed" and outcome.error_type == "EngineDied" and rebuilds_left[0]:
        say(f"  engine process died during {name}: rebuilding it and retrying {name} once")
        outcome = evaluate(check)
    return outcome


class NoMetricError(RuntimeError):
    """A dataset's lm-eval result came back without a single metric."""


def _evaluate_one(
    name: str,
    item: Pending,
    engine: Engine,
    run: RunConfig,
    run_dir: RunDirectory,
    store: ResultStore,
    gate: EngineGate | None,
    check: Callable[[], None] | None = None,
) -> DatasetOutcome:
    outcome = DatasetOutcome(name=name, task=item.dataset.config.task, fingerprint=item.fingerprint)
    outcome.evaluation = dict(item.key.get("evaluation", {}))
    meter = RequestMeter()  # this dataset's own, whatever else is in flight
    from harness.evaluation.journaled import JournaledLM  # imports lm-eval

    journal = journal_of(store, name, item)
    start = time.perf_counter()
    try:
        if check is not None:  # not timed: the evaluation starts after it
            check()
            start = time.perf_counter()
        lm = JournaledLM(
            engine.lm,
            journal,
            _session(item),
            seeded=run.seed is not None,
            slice_s=run.strategy.journal_slice_s,
            meter=meter,
            count_tokens=engine.count_tokens,
            gate=gate,
        )
        try:
            result = run_lm_eval(lm, item.dataset, run)
        finally:
            journal.close()
            outcome.requests_journaled = lm.from_journal
            outcome.journal_sources = [s for s in lm.sources if s["records"]]
        _measure(outcome, meter, time.perf_counter() - start)
        outcome.metrics = metric_items(headline_entry(result, outcome.task))
        predict_only = settings_for(run, item.dataset.config).predict_only
        if predict_only and not result.get("samples"):
            raise NoMetricError(
                f"predict_only: lm-eval returned no outputs for task {outcome.task!r}. Nothing "
                "was stored."
            )
        if not predict_only and not any(is_score(k) for k in outcome.metrics):
            raise NoMetricError(
                f"lm-eval returned no metric for task {outcome.task!r}: its result holds none "
                "(a metric_list whose metrics produced nothing, or a filter that drops every "
                "answer). Nothing was stored. Fix: check the task's metric_list and filters"
            )
        outcome.result_file, outcome.samples_file = write_result(run_dir, name, result)
        drop = ("result_file", "samples_file")
        stored = {k: v for k, v in outcome.to_dict().items() if k not in drop}
        store.save(name, item.fingerprint, item.key, stored, result)
        journal.delete()  # the result is stored: no answer in it is needed again
    except Exception as err:  # one dataset's failure must not take the others down
        _measure(outcome, meter, time.perf_counter() - start)
        outcome.status = "failed"
        outcome.error_type = type(err).__name__
        outcome.error_message = str(err).strip().splitlines()[0] if str(err).strip() else ""
        log.error("dataset %s failed: %s: %s", name, outcome.error_type, outcome.error_message)
        error = {
            "dataset": name,
            "task": outcome.task,
            "error_type": outcome.error_type,
            "error_message": str(err),
            "traceback": traceback.format_exc(),
        }
        try:
            run_dir.write_error(name, error)
        except DiskFull as full:  # the disk is full: the summary and the console still say why
            log.error("%s", full)
    return outcome


def write_result(
    run_dir: RunDirectory, name: str, result: dict[str, Any]
) -> tuple[str, str | None]:
    """``RunDirectory.write_result``'s two paths as the strings ``DatasetOutcome`` keeps."""
    path, samples = run_dir.write_result(name, result)
    return str(path), None if samples is None else str(samples)


def _session(item: Pending) -> dict[str, Any]:
    """Who writes the records that follow in a journal: this process, its node, its data-parallel
    size (a resume may differ in each)."""
    deployment = item.key.get("deployment", {})
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "data_parallel_size": deployment.get("dp"),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
