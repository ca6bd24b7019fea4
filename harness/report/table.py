"""The comparison table: one row per (model, strategy) run, one column per dataset's headline
metric (with its stderr), then load time, total time, throughput and, where logged, GPU energy and
peak memory. Every cell is a metric as MLflow returns it, or a sum/ratio of such metrics.

Metric names are lm-eval's as harness logs them (harness/record/metrics.py ``metric_items``):
``acc``, ``acc_stderr``, ``exact_match/strict-match``, ``exact_match_stderr/strict-match``,
``word_perplexity``; the timing metrics are harness's own (harness/evaluation/loop.py).

A dataset that is an lm-eval group keeps its headline cell; its subgroups and subtasks (logged
on its child run as ``<member>/<metric>``, harness/tracking/groups.py) make a table of their
own, one row per member and one cell per run (``Table.groups``, ``Row.members``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from harness.record.groups import Member, members, split_metrics
from harness.record.metrics import headline, lower_is_better, stderr_name
from harness.report.runs import Collection, DatasetRun, ParentRun
from harness.views import group_size


@dataclass
class Cell:
    """One dataset's headline figure in one row."""

    value: float | None
    """The headline metric; None when the dataset failed or did not log it."""
    stderr: float | None
    """Its stderr where lm-eval computed one."""
    status: str
    """The child run's status (``FINISHED``, ``FAILED``, ...); ``missing`` when not run."""
    documents: int | None = None
    """The documents the figure stands on (lm-eval's ``n-samples``, effective); None when the
    run did not record them."""


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
    members: dict[str, dict[str, Cell]] = field(default_factory=dict)
    """For each group dataset, the headline cell of each of its subgroups and subtasks."""


@dataclass
class GroupPart:
    """The subgroups and subtasks of one group dataset, over every run shown."""

    members: list[Member]
    """Depth-first, as lm-eval lists them (the first run's order, then members only later runs
    have)."""
    metrics: dict[str, str]
    """Each member's headline metric (the headline rule over its metrics in every run)."""
    summary: str
    """``3 subtasks in 1 subgroup``."""


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
    groups: dict[str, GroupPart] = field(default_factory=dict)
    """The datasets that are lm-eval groups, with their subgroups and subtasks."""


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


def _parted(run: ParentRun) -> dict[str, tuple[dict[str, float], dict[str, dict[str, float]]]]:
    """Each dataset's metrics of one run parted into its own and its members' (a group's)."""
    parted = {}
    for name, child in run.datasets.items():
        tree = child.tree
        parted[name] = (
            split_metrics(child.metrics, tree, child.task) if tree else (child.metrics, {})
        )
    return parted


def _group_parts(
    collection: Collection, parted: dict[str, dict[str, tuple[dict, dict]]]
) -> dict[str, GroupPart]:
    """Every group dataset's members over the runs, and the headline metric of each."""
    found: dict[str, list[Member]] = {}
    names: dict[str, dict[str, set[str]]] = {}
    trees: dict[str, str] = {}
    for run in collection.runs:
        for ds, child in run.datasets.items():
            tree = child.tree
            if not tree:
                continue
            these = members(tree, child.task)
            listed = found.setdefault(ds, [])
            known = {m.name for m in listed}
            listed += [m for m in these if m.name not in known]
            trees.setdefault(ds, group_size(tree, [m.name for m in these]))
            for member, metrics in parted[run.run_id][ds][1].items():
                names.setdefault(ds, {}).setdefault(member, set()).update(metrics)
    parts = {}
    for ds, listed in found.items():
        by_member = names.get(ds, {})
        heads = {m.name: h for m in listed if (h := headline(by_member.get(m.name, set())))}
        parts[ds] = GroupPart(listed, heads, trees[ds])
    return parts


def _cell(
    metrics: dict[str, float] | None, metric: str | None, status: str, documents: int | None
) -> Cell:
    if metrics is None:
        return Cell(None, None, "missing")
    value = metrics.get(metric) if metric else None
    stderr = metrics.get(stderr_name(metric)) if metric else None
    return Cell(value, stderr, status, documents if value is not None else None)


def build_table(collection: Collection) -> Table:
    """The comparison table of the collected runs."""
    parted = {run.run_id: _parted(run) for run in collection.runs}
    datasets: list[str] = []
    names: dict[str, set[str]] = {}
    for run in collection.runs:
        for name in run.datasets:
            if name not in names:
                datasets.append(name)
                names[name] = set()
            names[name].update(parted[run.run_id][name][0])
    metrics = {ds: m for ds in datasets if (m := headline(names[ds])) is not None}
    groups = _group_parts(collection, parted)
    rows = []
    for run in collection.runs:
        cells = {}
        for ds in datasets:
            d = run.datasets.get(ds)
            own = parted[run.run_id][ds][0] if d is not None else None
            status = d.status if d is not None else "missing"
            count = d.documents() if d is not None else None
            cells[ds] = _cell(own, metrics.get(ds), status, count)
        member_cells = {}
        for ds, part in groups.items():
            d = run.datasets.get(ds)
            of = parted[run.run_id][ds][1] if d is not None else {}
            status = d.status if d is not None else "missing"
            member_cells[ds] = {
                m.name: _cell(
                    of.get(m.name),
                    part.metrics.get(m.name),
                    status,
                    d.documents(m.name) if d is not None else None,
                )
                for m in part.members
            }
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
        rows.append(Row(run, cells, figures, member_cells))
    shown = [
        k
        for k in FIGURES
        if k not in ("energy_j", "peak_memory_gib") or any(r.figures[k] is not None for r in rows)
    ]
    return Table(datasets, metrics, rows, shown, groups)


def metric_title(metric: str) -> str:
    """A headline metric's name as a header shows it, with its direction when lower is better."""
    return f"{metric} (lower is better)" if lower_is_better(metric) else metric
