"""An lm-eval group's difference weighted as lm-eval weights it.

lm-eval 0.4.13 aggregates a group from its direct members (``aggregate_subtask_metrics``): the
mean of the members' figures weighted by their sizes (``weight_by_size: true``, its default) or
unweighted (``false``). A subgroup's size is the sum of its subtasks'. The result does not
record which was configured, so it is read back from the figures: the weighting whose mean of
the members' figures reproduces the group's own figure. Each document then carries the share
of its subtask in the group divided by the subtask's count, and the group's value is the
weighted mean of its documents' values (with size weighting throughout, the plain mean).
"""

from __future__ import annotations

import math
from typing import Any


def _sizes(result: dict[str, Any], tree: dict[str, list[str]]) -> dict[str, float]:
    counts = {
        k: float((v or {}).get("effective") or 0)
        for k, v in (result.get("n-samples") or {}).items()
    }

    def size(member: str) -> float:
        if member in tree:
            return sum(size(m) for m in tree[member])
        return counts.get(member, 0.0)

    return {m: size(m) for g in tree for m in [g, *tree[g]]}


def _figure(result: dict[str, Any], member: str, key: str) -> float | None:
    for section in ("groups", "results"):
        entry = (result.get(section) or {}).get(member) or {}
        value = entry.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    return None


def weighting(result: dict[str, Any], tree: dict[str, list[str]], key: str) -> dict[str, bool]:
    """For each group of ``tree``: whether lm-eval weighted its members by size when it computed
    the figure ``key`` (``acc,none``) of ``result``; size (lm-eval's default) where the figures
    cannot tell."""
    sizes = _sizes(result, tree)
    by_size: dict[str, bool] = {}
    for group, members in tree.items():
        own = _figure(result, group, key)
        figures = [_figure(result, m, key) for m in members]
        if own is None or any(f is None for f in figures) or len(members) < 2:
            by_size[group] = True
            continue
        values = [float(f) for f in figures if f is not None]
        weights = [sizes.get(m, 0.0) for m in members]
        sized = sum(v * w for v, w in zip(values, weights, strict=True)) / (sum(weights) or 1.0)
        plain = sum(values) / len(values)
        by_size[group] = math.isclose(own, sized, abs_tol=1e-9) or not math.isclose(
            own, plain, abs_tol=1e-9
        )
    return by_size


def document_weights(
    tree: dict[str, list[str]], root: str, counts: dict[str, int], by_size: dict[str, bool]
) -> dict[str, float]:
    """Each subtask's weight per document in ``root``'s figure, from the documents compared
    (``counts`` per subtask): the subtask's share of the group over its count. Members with no
    document compared drop out, as lm-eval drops nothing: the shares are of what is compared."""

    def size(member: str) -> int:
        if member in tree:
            return sum(size(m) for m in tree[member])
        return counts.get(member, 0)

    weights: dict[str, float] = {}

    def visit(group: str, share: float) -> None:
        members = [m for m in tree.get(group, []) if size(m) > 0]
        raw = [float(size(m)) if by_size.get(group, True) else 1.0 for m in members]
        total = sum(raw)
        for member, weight in zip(members, raw, strict=True):
            part = share * weight / total
            if member in tree:
                visit(member, part)
            else:
                weights[member] = weights.get(member, 0.0) + part / size(member)

    if root in tree:
        visit(root, 1.0)
    elif counts.get(root):
        weights[root] = 1.0 / counts[root]
    return weights
