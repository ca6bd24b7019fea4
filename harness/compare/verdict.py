"""Verdicts: each row's ``better`` / ``worse`` / ``same`` after Holm's correction across a
candidate's rows, and the gate's exit code (``--fail-if-worse DELTA``)."""

from __future__ import annotations

from typing import Any

from harness.compare.stats import holm

PASS, WORSE, BAD_INPUT = 0, 1, 2
"""The gate's exit codes: no dataset significantly worse by more than DELTA; one is; the input
could not be compared."""


def apply_holm(rows: list[dict[str, Any]]) -> None:
    """Set ``p_value_holm`` on each of one candidate's rows: Holm across every row with a
    p-value (datasets, groups, subgroups and subtasks alike)."""
    adjusted = holm([r.get("p_value") for r in rows])
    for row, p in zip(rows, adjusted, strict=True):
        row["p_value_holm"] = p


def row_verdict(row: dict[str, Any], alpha: float) -> str:
    """``better`` or ``worse`` when the Holm-adjusted p-value is under ``alpha`` (in the metric's
    better direction or not), else ``same``; ``same`` for a row no test could be made on."""
    p, difference = row.get("p_value_holm"), row.get("difference")
    if p is None or difference is None or p >= alpha or difference == 0:
        return "same"
    improved = difference < 0 if row.get("lower_is_better") else difference > 0
    return "better" if improved else "worse"


def worse_by(row: dict[str, Any]) -> float:
    """How much worse the candidate is, in the metric's units (positive: worse)."""
    difference = float(row.get("difference") or 0.0)
    return difference if row.get("lower_is_better") else -difference


def gate(
    rows: list[dict[str, Any]], fail_if_worse: float | None, names: dict[str, str]
) -> tuple[int, list[str]]:
    """The exit code and the datasets that fail it: a dataset's own row (not a subtask's) whose
    verdict is ``worse`` and that is worse by more than ``fail_if_worse``. Without the option,
    the code is always ``PASS`` (the verdicts are still written). Each failing dataset is
    named with its candidate (``names``: run id -> the run's name)."""
    if fail_if_worse is None:
        return PASS, []
    failing = [
        f"{names.get(r['candidate'], r['candidate'])}: {r['dataset']}"
        for r in rows
        if r["subtask"] is None and r["verdict"] == "worse" and worse_by(r) > fail_if_worse
    ]
    return (WORSE if failing else PASS), failing


def overall(rows: list[dict[str, Any]]) -> str:
    """The comparison's verdict: ``worse`` if any dataset row is, else ``better`` if any is,
    else ``same``."""
    verdicts = {r["verdict"] for r in rows if r["subtask"] is None}
    for verdict in ("worse", "better"):
        if verdict in verdicts:
            return verdict
    return "same"
