"""The comparison table: one row per (model, strategy) run, one column per dataset's headline
metric (with its stderr), then load time, total time, throughput and, where logged, GPU energy and
peak memory. Every cell is a metric as MLflow returns it, or a sum/ratio of such metrics.

Metric names are lm-eval's as harness logs them (harness/record/metrics.py ``metric_items``):
``acc``, ``acc_stderr``, ``exact_match/strict-match``, ``exact_match_stderr/strict-match``,
``word_perplexity``; the timing metrics are harness's own (harness/evaluation/loop.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from harness.record.metrics import headline, lower_is_better, stderr_name
from harness.report.collect import Collection, DatasetRun, ParentRun


@dataclass
class Cell:
    """One dataset's headline figure in one row."""

    value: float | None
    """The headline metric; None when the dataset failed or did not log it."""
    stderr: float | None
    """Its stderr where lm-eval computed one."""
    status: str
    """The child run's status (``FINISHED``, ``FAILED``, ...); ``missing`` when not run."""


@dataclass
class Row:
    """One (model, strategy) run."""

    run: ParentRun
    """The parent run it stands for."""
    cells: dict[str, Cell]
    """The headline cell of every dataset of the table."""
    figures: dict[str, float | None]
    """``load_time_s``, ``total_time_s``, ``requests_per_s``, ``tokens_per_s``, ``energy_j``,
    ``peak_memory_gib`` (None where not logged)."""


@dataclass
class Table:
    """The whole comparison."""

    datasets: list[str]
    """The datasets, in the order the runs evaluated them."""
    metrics: dict[str, str]
    """The headline metric of each dataset."""
    rows: list[Row]
    """One per run shown."""
    figures: list[str] = field(default_factory=list)
    """The figure columns shown (energy and peak memory only where some run logged them)."""


FIGURES = {
    "load_time_s": "load s",
    "total_time_s": "total s",
    "requests_per_s": "req/s",
    "tokens_per_s": "tok/s",
    "energy_j": "energy J",
    "peak_memory_gib": "peak GiB",
}
"""The figure columns after the datasets: CSV name -> Markdown/HTML header."""


def _throughput(datasets: list[DatasetRun]) -> tuple[float | None, float | None]:
    """Requests and tokens per second over every finished dataset: the totals over the total
    evaluation time (so a long dataset weighs as much as it took)."""
    timed = [
        d
        for d in datasets
        if d.status == "FINISHED"
        and d.metrics.get("eval_time_s", 0) > 0
        and "requests" in d.metrics
    ]
    seconds = sum(d.metrics["eval_time_s"] for d in timed)
    if not timed or seconds <= 0:
        return None, None
    requests = sum(d.metrics["requests"] for d in timed)
    tokens = sum(d.metrics.get("tokens_per_s", 0.0) * d.metrics["eval_time_s"] for d in timed)
    return requests / seconds, tokens / seconds


def _gpu_figures(run: ParentRun) -> tuple[float | None, float | None]:
    """Energy of the load and every dataset (None unless all of them logged it) and the peak GPU
    memory of any phase."""
    phases = [run.metrics.get("load/telemetry/energy_j")] + [
        d.metrics.get("telemetry/energy_j") for d in run.datasets.values()
    ]
    known = [e for e in phases if e is not None]
    energy = sum(known) if known and len(known) == len(phases) else None
    peaks = [run.metrics.get("load/telemetry/peak_memory_gib")] + [
        d.metrics.get("telemetry/peak_memory_gib") for d in run.datasets.values()
    ]
    peak = max((p for p in peaks if p is not None), default=None)
    return energy, peak


def build_table(collection: Collection) -> Table:
    """The comparison table of the collected runs."""
    datasets: list[str] = []
    names: dict[str, set[str]] = {}
    for run in collection.runs:
        for name, child in run.datasets.items():
            if name not in names:
                datasets.append(name)
                names[name] = set()
            names[name].update(child.metrics)
    metrics = {ds: m for ds in datasets if (m := headline(names[ds])) is not None}
    rows = []
    for run in collection.runs:
        cells = {}
        for ds in datasets:
            d = run.datasets.get(ds)
            metric = metrics.get(ds)
            if d is None:
                cells[ds] = Cell(None, None, "missing")
                continue
            value = d.metrics.get(metric) if metric else None
            stderr = d.metrics.get(stderr_name(metric)) if metric else None
            cells[ds] = Cell(value, stderr, d.status)
        requests_per_s, tokens_per_s = _throughput(list(run.datasets.values()))
        energy, peak = _gpu_figures(run)
        figures = {
            "load_time_s": run.metrics.get("load_time_s"),
            "total_time_s": run.metrics.get("total_time_s"),
            "requests_per_s": requests_per_s,
            "tokens_per_s": tokens_per_s,
            "energy_j": energy,
            "peak_memory_gib": peak,
        }
        rows.append(Row(run, cells, figures))
    shown = [
        k
        for k in FIGURES
        if k not in ("energy_j", "peak_memory_gib") or any(r.figures[k] is not None for r in rows)
    ]
    return Table(datasets, metrics, rows, shown)


def metric_title(metric: str) -> str:
    """A headline metric's name as a header shows it, with its direction when lower is better."""
    return f"{metric} (lower is better)" if lower_is_better(metric) else metric
