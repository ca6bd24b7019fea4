"""One dataset's evaluation against the resident engine: its stored result reused, or lm-eval run
through the dataset's journaled LM, then stored, written, tracked and announced.

The loop over datasets (``harness/evaluation/loop.py``) hands each dataset here with the run's
``Evaluation``, what every dataset of the run shares. A dataset that raises is recorded as that
dataset's failure; an engine that lives outside this process is health-checked before each
dataset, rebuilt once when it is dead, and a dataset it died in is retried once on the rebuilt
one (resuming from its journal).
"""

from __future__ import annotations

import logging
import os
import socket
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from harness.config.evaluation import settings_for
from harness.config.schema import RunConfig
from harness.console import quiet_lm_eval_git_probe, say
from harness.engines.base import Engine, EngineDied, RemoteEngine, RequestMeter
from harness.evaluation.gate import EngineGate
from harness.evaluation.journal_sweep import sweep_stored
from harness.evaluation.tasks import PreparedDataset, leaf_tasks
from harness.planning.plan import Plan
from harness.record.files import DiskFull
from harness.record.journal import RequestJournal
from harness.record.metrics import headline_entry, is_score, metric_items, without_placeholders
from harness.record.outcome import DatasetOutcome
from harness.record.rundir import RunDirectory
from harness.record.store import ResultStore
from harness.tracking import Tracker
from harness.tracking.rundir import open_child, track_outcome

log = logging.getLogger(__name__)


@dataclass
class Pending:
    """A dataset to evaluate, with the key its result is stored under."""

    dataset: PreparedDataset
    key: dict[str, Any]
    """Everything that decides the dataset's numbers (``fingerprint.dataset_key``)."""
    fingerprint: str
    """The key's fingerprint: the name its result is stored under."""
    stored: dict[str, Any] | None = None
    """The intact stored payload when this exact evaluation already finished (resume)."""
    journal_fingerprint: str = ""
    """The fingerprint its request journal is kept under (``journal_key``: what cannot change an
    answer, such as the bootstrap iterations, left out)."""


@dataclass
class Evaluation:
    """What every dataset of a run is evaluated with: one per run, shared by the datasets in
    flight together."""

    engine: Engine | None
    """The resident engine; None when every dataset has a stored result."""
    gate: EngineGate | None
    """The one way to the engine's answers (``engine.answer``); None without an engine."""
    run: RunConfig
    """The run's configuration (lm-eval's settings, seed, journal slice length)."""
    plan: Plan
    """The run's plan (how many datasets share the engine)."""
    run_dir: RunDirectory
    """Where each dataset's result, samples and error are written."""
    store: ResultStore
    """Where finished results are stored and journals kept."""
    tracker: Tracker
    """The run's tracker (each dataset a child run)."""
    emit: Callable[..., None]
    """Hears ``dataset_started``, ``dataset_done``, ``dataset_failed``, ``dataset_resumed`` and
    ``journals_removed`` (harness/record/events.py), one event at a time."""
    total: int
    """Datasets of the run (the console's ``[i/total]``)."""


def evaluate_dataset(ev: Evaluation, i: int, name: str, item: Pending) -> DatasetOutcome:
    """Dataset ``name`` (the ``i``-th of the run) taken from the store or evaluated, tracked and
    announced; an exception in it is recorded as its failure."""
    say(f"[{i}/{ev.total}] {name} ...")
    settings = {k: getattr(item.dataset.config, k) for k in ("task", "num_fewshot", "limit")}
    settings |= item.key.get("evaluation", {})  # lm-eval's settings it changes
    child = open_child(ev.tracker, name, settings, item.fingerprint, item.stored is not None)
    outcome = _resumed(ev, name, item) if item.stored is not None else _evaluated(ev, name, item)
    track_outcome(ev.tracker, child, outcome)
    verdict = {"ok": "ok", "failed": f"FAILED ({outcome.error_type})"}[outcome.status]
    how = "stored result reused" if outcome.resumed else f"in {outcome.eval_time_s:.1f}s"
    if outcome.requests_journaled:
        asked = outcome.requests + outcome.requests_journaled
        how += f", {outcome.requests_journaled} of {asked} requests from the journal"
    if outcome.requests_retried:
        how += f", {outcome.requests_retried} requests retried (transport errors, not scored)"
    if outcome.status == "ok" and outcome.evaluation.get("predict_only"):
        how += f", predict-only: no metric, outputs recorded in {outcome.samples_file}"
    say(f"[{i}/{ev.total}] {name} {verdict} {how}")
    return outcome


def _resumed(ev: Evaluation, name: str, item: Pending) -> DatasetOutcome:
    assert item.stored is not None
    outcome = DatasetOutcome(**item.stored["outcome"])
    outcome.metrics = without_placeholders(outcome.metrics)  # stored before they were left out
    outcome.fingerprint = item.fingerprint
    outcome.result_file, outcome.samples_file = write_result(
        ev.run_dir, name, item.stored["result"]
    )
    outcome.resumed = True
    outcome.take_groups(item.stored["result"])  # also for a result stored before they were kept
    ev.emit(
        "dataset_resumed", dataset=name, fingerprint=item.fingerprint, outcome=outcome.to_dict()
    )
    return outcome


def _evaluated(ev: Evaluation, name: str, item: Pending) -> DatasetOutcome:
    ev.emit("dataset_started", dataset=name, task=item.dataset.config.task)
    outcome = _checked(ev, name, item)
    done = {k: getattr(outcome, k) for k in ("eval_time_s", "requests", "tokens_per_s")}
    if outcome.status == "ok":
        ev.emit(
            "dataset_done", dataset=name, **done, metrics=outcome.metrics, outcome=outcome.to_dict()
        )
    else:
        error = {"error": outcome.error_type, "message": outcome.error_message}
        ev.emit("dataset_failed", dataset=name, **done, **error, outcome=outcome.to_dict())
    return outcome


def _checked(ev: Evaluation, name: str, item: Pending) -> DatasetOutcome:
    """The dataset evaluated, with an engine outside this process health-checked first (a
    one-token request); a dead engine is rebuilt once, and a dataset it died in is retried once
    on the rebuilt one."""
    engine = ev.engine
    if not isinstance(engine, RemoteEngine):  # in this process: nothing to check from outside
        outcome, _ = _attempt(ev, name, item)
        return outcome
    rebuilds_left = 1

    def check() -> None:
        nonlocal rebuilds_left
        if engine.revive(rebuild=rebuilds_left > 0):
            rebuilds_left -= 1
            say(f"  engine died: rebuilt (restarted) it for {name}")

    outcome, error = _attempt(ev, name, item, check, keep_error=False)
    if isinstance(error, EngineDied) and rebuilds_left:
        say(f"  engine died during {name} ({error}): rebuilding it and retrying {name} once")
        outcome, error = _attempt(ev, name, item, check)
        if error is None:  # the engine's death cost a restart, not the dataset
            say(f"  {name}: engine restarted and resumed from the journal")
    elif error is not None:  # not retried: this failure is the dataset's
        log.error("dataset %s failed: %s: %s", name, outcome.error_type, outcome.error_message)
        _write_error(ev, name, outcome, error)
    return outcome


class NoMetricError(RuntimeError):
    """A dataset's lm-eval result came back without a single metric."""


def _attempt(
    ev: Evaluation,
    name: str,
    item: Pending,
    check: Callable[[], None] | None = None,
    keep_error: bool = True,
) -> tuple[DatasetOutcome, Exception | None]:
    """One evaluation of the dataset, stored when it succeeds; the outcome, and the error that
    failed it (written to the run directory when ``keep_error``)."""
    outcome = DatasetOutcome(name=name, task=item.dataset.config.task, fingerprint=item.fingerprint)
    outcome.evaluation = dict(item.key.get("evaluation", {}))
    meter = RequestMeter()  # this dataset's own, whatever else is in flight
    start = time.perf_counter()
    try:
        if check is not None:  # not timed: the evaluation starts after it
            check()
            start = time.perf_counter()
        result = _journaled_lm_eval(ev, name, item, outcome, meter)
        _measure(outcome, meter, time.perf_counter() - start)
        _store(ev, name, item, outcome, result)
    except Exception as err:  # one dataset's failure must not take the others down
        _measure(outcome, meter, time.perf_counter() - start)
        outcome.status = "failed"
        outcome.error_type = type(err).__name__
        outcome.error_message = str(err).strip().splitlines()[0] if str(err).strip() else ""
        if keep_error:
            log.error("dataset %s failed: %s: %s", name, outcome.error_type, outcome.error_message)
            _write_error(ev, name, outcome, err)
        else:  # the caller decides: a dead engine is restarted and the dataset resumed
            log.warning(
                "dataset %s interrupted: %s: %s", name, outcome.error_type, outcome.error_message
            )
        return outcome, err
    return outcome, None


def _journaled_lm_eval(
    ev: Evaluation, name: str, item: Pending, outcome: DatasetOutcome, meter: RequestMeter
) -> dict[str, Any]:
    """lm-eval's result of the dataset, its requests answered from its journal first and the
    rest by the engine through the run's gate."""
    from harness.evaluation.journaled import JournaledLM  # imports lm-eval

    assert ev.engine is not None and ev.gate is not None
    journal = journal_of(ev.store, name, item)
    seeded = ev.run.seed is not None
    slice_s = ev.run.strategy.journal_slice_s
    lm = JournaledLM(ev.engine, journal, _session(item), ev.gate, seeded, slice_s, meter)
    try:
        return run_lm_eval(lm, item.dataset, ev.run)
    finally:
        journal.close()
        outcome.requests_journaled = lm.from_journal
        outcome.journal_sources = [s for s in lm.sources if s["records"]]


def _store(
    ev: Evaluation, name: str, item: Pending, outcome: DatasetOutcome, result: dict[str, Any]
) -> None:
    """The dataset's metrics checked, its result written and stored, its journal deleted."""
    outcome.metrics = metric_items(headline_entry(result, outcome.task))
    outcome.take_groups(result)  # a group's subgroups and subtasks
    predict_only = settings_for(ev.run, item.dataset.config).predict_only
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
    outcome.result_file, outcome.samples_file = write_result(ev.run_dir, name, result)
    drop = ("result_file", "samples_file")
    stored = {k: v for k, v in outcome.to_dict().items() if k not in drop}
    ev.store.save(name, item.fingerprint, item.key, stored, result)
    journal_of(ev.store, name, item).delete()  # stored: no answer in it is needed again
    # and its other journals that no result can use
    sweep_stored(ev.store, name, ev.emit, ev.run.journal_keep_days)


def _write_error(ev: Evaluation, name: str, outcome: DatasetOutcome, err: Exception) -> None:
    error = {
        "dataset": name,
        "task": outcome.task,
        "error_type": outcome.error_type,
        "error_message": str(err),
        "requests_retried": outcome.requests_retried,  # spent before it failed
        "traceback": "".join(traceback.format_exception(err)),
    }
    try:
        ev.run_dir.write_error(name, error)
    except DiskFull as full:  # the disk is full: the summary and the console still say why
        log.error("%s", full)


def _measure(outcome: DatasetOutcome, meter: RequestMeter, elapsed: float) -> None:
    outcome.eval_time_s = round(elapsed, 4)
    outcome.requests = meter.requests
    outcome.requests_retried = meter.retried
    outcome.prompt_tokens = meter.prompt_tokens
    outcome.generated_tokens = meter.generated_tokens
    if elapsed > 0:
        outcome.requests_per_s = round(meter.requests / elapsed, 3)
        tokens = meter.prompt_tokens + meter.generated_tokens
        outcome.tokens_per_s = round(tokens / elapsed, 3)


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


def write_result(
    run_dir: RunDirectory, name: str, result: dict[str, Any]
) -> tuple[str, str | None]:
    """``RunDirectory.write_result``'s two paths as the strings ``DatasetOutcome`` keeps."""
    path, samples = run_dir.write_result(name, result)
    return str(path), None if samples is None else str(samples)


def journal_of(store: ResultStore, name: str, item: Pending) -> RequestJournal:
    """The request journal of one dataset, beside the result store."""
    return store.journal(name, item.journal_fingerprint)


def _session(item: Pending) -> dict[str, Any]:
    """Who writes the records that follow in a journal: this process, its node, its data-parallel
    size."""
    deployment = item.key.get("deployment", {})
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "data_parallel_size": deployment.get("dp"),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
