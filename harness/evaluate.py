"""The resident loop: every dataset is evaluated by lm-eval against the one engine already loaded.

A dataset that raises is recorded as that dataset's failure and the loop goes on.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness.config.schema import RunConfig
from harness.engines.base import Engine, RequestMeter, attach_meter
from harness.results import RunDirectory, headline_entry, metric_items
from harness.tasks import PreparedDataset
from harness.tracking import Tracker

log = logging.getLogger(__name__)


@dataclass
class DatasetOutcome:
    """What happened to one dataset: its metrics and throughput, or its failure."""

    name: str
    task: str
    status: str = "ok"
    eval_time_s: float = 0.0
    requests: int = 0
    prompt_tokens: int = 0
    generated_tokens: int = 0
    requests_per_s: float = 0.0
    tokens_per_s: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)
    result_file: str | None = None
    error_type: str | None = None
    error_message: str | None = None

    def timing_metrics(self) -> dict[str, float]:
        return {
            "eval_time_s": self.eval_time_s,
            "requests": float(self.requests),
            "requests_per_s": self.requests_per_s,
            "tokens_per_s": self.tokens_per_s,
        }

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_lm_eval(lm: Any, dataset: PreparedDataset, run: RunConfig) -> dict[str, Any]:
    """One ``lm_eval.simple_evaluate`` call for one dataset against the resident ``lm``."""
    import lm_eval

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
    result = lm_eval.simple_evaluate(
        model=lm,
        tasks=tasks,
        num_fewshot=dataset.config.num_fewshot,
        limit=limit,
        bootstrap_iters=run.bootstrap_iters,
        log_samples=run.log_samples,
        task_manager=dataset.manager,
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


def evaluate_all(
    engine: Engine,
    datasets: dict[str, PreparedDataset],
    run: RunConfig,
    run_dir: RunDirectory,
    tracker: Tracker,
) -> list[DatasetOutcome]:
    """Evaluate every dataset with the resident engine, storing and tracking each as it ends."""
    meter = attach_meter(engine.lm, engine.count_tokens)
    outcomes: list[DatasetOutcome] = []
    total = len(datasets)
    for i, (name, dataset) in enumerate(datasets.items(), start=1):
        print(f"[{i}/{total}] {name} ...", flush=True)
        outcome = DatasetOutcome(name=name, task=dataset.config.task)
        child = tracker.child(
            name,
            params={
                "task": dataset.config.task,
                "num_fewshot": str(dataset.config.num_fewshot),
                "limit": str(dataset.config.limit),
            },
            tags={"dataset": name, "task": dataset.config.task},
        )
        meter.reset()
        start = time.perf_counter()
        try:
            result = run_lm_eval(engine.lm, dataset, run)
            _measure(outcome, meter, time.perf_counter() - start)
            outcome.metrics = metric_items(headline_entry(result, dataset.config.task))
            outcome.result_file = str(run_dir.write_result(name, result))
        except Exception as err:  # one dataset's failure must not take the others down
            _measure(outcome, meter, time.perf_counter() - start)
            outcome.status = "failed"
            outcome.error_type = type(err).__name__
            outcome.error_message = str(err).strip().splitlines()[0] if str(err).strip() else ""
            log.error("dataset %s failed: %s: %s", name, outcome.error_type, outcome.error_message)
        _track(tracker, child, outcome)
        outcomes.append(outcome)
        verdict = "ok" if outcome.status == "ok" else f"FAILED ({outcome.error_type})"
        print(f"[{i}/{total}] {name} {verdict} in {outcome.eval_time_s:.1f}s", flush=True)
    return outcomes


def _track(tracker: Tracker, child: str | None, outcome: DatasetOutcome) -> None:
    tags = {"status": outcome.status}
    if outcome.error_type:
        tags["error_type"] = outcome.error_type
        tags["error_message"] = (outcome.error_message or "")[:5000]
    timing = outcome.timing_metrics()
    if child is not None:
        tracker.log_metrics({**outcome.metrics, **timing}, run_id=child)
        tracker.set_tags(tags, run_id=child)
        if outcome.result_file:
            tracker.log_artifact(Path(outcome.result_file), run_id=child)
        tracker.end(run_id=child, failed=outcome.status != "ok")
    prefixed = {f"{outcome.name}/{k}": v for k, v in {**outcome.metrics, **timing}.items()}
    tracker.log_metrics(prefixed)
    tracker.set_tags({f"{outcome.name}/{k}": v for k, v in tags.items()})
