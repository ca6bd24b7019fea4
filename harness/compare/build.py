"""A comparison from recorded runs: each candidate against the baseline, dataset by dataset,
as the document compare.json holds (docs/tracking-and-report.md, "Comparing runs")."""

from __future__ import annotations

from typing import Any

from harness.compare import stats
from harness.compare.join import REASONS, join
from harness.compare.rows import dataset_rows
from harness.compare.runs import DatasetFiles, RecordedRun
from harness.compare.samples import CompareError, read_samples, sample_metrics
from harness.compare.verdict import apply_holm, gate, overall, row_verdict
from harness.record.metrics import headline, lower_is_better

FORMAT = "harness-compare/1"
"""compare.json's ``format``: its schema's name and version."""

COSTS = ("tokens_per_s", "energy_j", "peak_memory_gib")
"""A dataset's costs compared beside its score (None where a run did not log one)."""


def _difference(base: float | None, cand: float | None) -> dict[str, float | None]:
    difference = cand - base if base is not None and cand is not None else None
    return {"baseline": base, "candidate": cand, "difference": difference}


def costs(base: RecordedRun, cand: RecordedRun, name: str) -> dict[str, Any]:
    """Each cost of ``name`` in both runs and its difference (candidate - baseline)."""
    a, b = base.datasets[name].cost, cand.datasets[name].cost
    found: dict[str, Any] = {key: _difference(a.get(key), b.get(key)) for key in COSTS}
    found["load_time_s"] = _difference(base.load_time_s, cand.load_time_s)
    return found


def _metric(name: str, a: DatasetFiles, b: DatasetFiles) -> tuple[str, bool]:
    if a.samples is None or b.samples is None:
        which = "baseline" if a.samples is None else "candidate"
        raise CompareError(
            f"dataset {name}: the {which} run has no per-sample records: a comparison joins the "
            "runs' samples. Fix: evaluate it again with log_samples=true (results are reused, "
            "samples are not: add rerun=true)"
        )
    common = sample_metrics(a.samples) & sample_metrics(b.samples)
    metric = headline(common)
    if metric is None:
        raise CompareError(
            f"dataset {name}: the two runs' samples share no metric: a comparison compares one "
            "metric of the same task. Fix: compare runs of the same task"
        )
    higher = a.result.get("higher_is_better") or {}
    own: dict[str, Any] = higher.get(a.task) or next(iter(higher.values()), {})
    return metric, lower_is_better(metric, own)


def compare_dataset(
    base: RecordedRun, cand: RecordedRun, name: str, settings: stats.Settings
) -> list[dict[str, Any]]:
    """One candidate's rows of one dataset (the dataset's, then its subgroups' and subtasks')."""
    a, b = base.datasets[name], cand.datasets[name]
    if a.task != b.task:
        raise CompareError(
            f"dataset {name} is task {a.task!r} in the baseline and {b.task!r} in {cand.ref!r}: "
            "runs of different tasks are never compared. Fix: compare runs of the same task"
        )
    metric, lower = _metric(name, a, b)
    assert a.samples is not None and b.samples is not None  # _metric checked
    joined = join(
        read_samples(a.samples, metric),
        read_samples(b.samples, metric),
        a.result.get("versions") or {},
        b.result.get("versions") or {},
    )
    if not joined.pairs:
        why = "; ".join(f"{n} {REASONS[r]}" for r, n in joined.excluded.items()) or "no samples"
        raise CompareError(
            f"dataset {name}: the baseline and {cand.ref!r} share no sample ({why}): a "
            "comparison is made on the same questions only. Fix: compare runs of the same "
            "task version with overlapping documents and the same prompts"
        )
    rows = dataset_rows(joined, a.result, a.task, metric, lower, settings)
    for row in rows:
        row["candidate"] = cand.run_id
        row["dataset"] = name
    rows[0]["cost"] = costs(base, cand, name)
    return rows


def compare(
    baseline: RecordedRun,
    candidates: list[RecordedRun],
    settings: stats.Settings,
    fail_if_worse: float | None,
) -> dict[str, Any]:
    """The comparison document (compare.json).

    Raises:
        CompareError: a candidate shares no dataset with the baseline, a shared dataset is
            another task, has no samples, or shares no sample.
    """
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    for cand in candidates:
        shared = [n for n in baseline.datasets if n in cand.datasets]
        if not shared:
            raise CompareError(
                f"run {cand.ref!r} shares no finished dataset with the baseline "
                f"{baseline.ref!r} (baseline: {', '.join(baseline.datasets) or 'none'}; "
                f"candidate: {', '.join(cand.datasets) or 'none'}): a comparison is made "
                "dataset by dataset. Fix: compare runs of the same datasets"
            )
        for name in [*baseline.datasets, *cand.datasets]:
            if name not in shared:
                where = "baseline" if name in baseline.datasets else "candidate"
                notes.append(f"{cand.ref}: dataset {name} is only in the {where}: not compared")
        own = [r for n in shared for r in compare_dataset(baseline, cand, n, settings)]
        apply_holm(own)
        for row in own:
            row["verdict"] = row_verdict(row, settings.alpha)
        rows.extend(own)
    code, failing = gate(rows, fail_if_worse, {c.run_id: c.name for c in candidates})
    return {
        "format": FORMAT,
        "baseline": baseline.describe(),
        "candidates": [c.describe() for c in candidates],
        "settings": {
            "alpha": settings.alpha,
            "bootstrap_resamples": settings.resamples,
            "seed": settings.seed,
            "fail_if_worse": fail_if_worse,
            "multiple_comparisons": "holm, across each candidate's rows",
        },
        "verdict": overall(rows),
        "exit_code": code,
        "failing": failing,
        "notes": notes,
        "rows": [_ordered(r) for r in rows],
    }


ROW_KEYS = (
    "candidate",
    "dataset",
    "subtask",
    "metric",
    "lower_is_better",
    "kind",
    "shared",
    "excluded",
    "weighting",
    "baseline",
    "candidate_value",
    "difference",
    "ci_low",
    "ci_high",
    "p_value",
    "p_value_holm",
    "test",
    "verdict",
    "flips_better",
    "flips_worse",
    "cost",
    "flipped",
)
"""A row's keys in compare.json, in order (``weighting`` and ``cost``: the dataset's own row only;
None on the others)."""


def _ordered(row: dict[str, Any]) -> dict[str, Any]:
    return {key: row.get(key) for key in ROW_KEYS}
