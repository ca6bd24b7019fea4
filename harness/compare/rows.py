"""The rows of a comparison: for a candidate and a dataset, one row for the dataset (an lm-eval
group: the group, weighted as lm-eval weights it) and one per subgroup and subtask of a group,
each with its paired test, interval and flipped samples."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from harness.compare import stats
from harness.compare.groups import document_weights, weighting
from harness.compare.join import Joined
from harness.compare.samples import Sample
from harness.record.groups import group_tree, members


@dataclass(frozen=True)
class Scope:
    """What one row covers: the dataset's metric and the tasks whose documents it pools."""

    metric: str
    """The metric compared, as harness names it (``acc``)."""
    lower_is_better: bool
    """A smaller value is better (perplexities)."""
    subtask: str | None
    """The subgroup or subtask; None for the dataset's own row."""


def kind_of(metric: str, values: list[Any]) -> str:
    """``binary`` (every value 0 or 1), ``continuous`` (numbers), ``corpus`` (a corpus metric's
    pairs) or ``none`` (nothing a paired test can use)."""
    if metric.partition("/")[0] in stats.CORPUS and all(
        isinstance(v, list | tuple) and len(v) == 2 for v in values
    ):
        return "corpus"
    numbers = [v for v in values if isinstance(v, int | float)]
    if len(numbers) != len(values):
        return "none"
    return "binary" if all(float(v) in (0.0, 1.0) for v in numbers) else "continuous"


def flip(base: Sample, cand: Sample, direction: str) -> dict[str, Any]:
    """A flipped sample as compare.json lists it."""
    return {
        "task": base.task,
        "doc_id": base.doc_id,
        "prompt": base.excerpt,
        "baseline_answer": base.answer,
        "candidate_answer": cand.answer,
        "baseline_value": base.value,
        "candidate_value": cand.value,
        "direction": direction,
    }


def row_statistics(
    pairs: list[tuple[Sample, Sample]],
    weights: list[float],
    scope: Scope,
    settings: stats.Settings,
) -> dict[str, Any]:
    """The figures of one row over its ``pairs`` (each document weighted by ``weights``)."""

    kind = kind_of(scope.metric, [v for p in pairs for v in (p[0].value, p[1].value)])
    row: dict[str, Any] = {
        "shared": len(pairs),
        "kind": kind,
        "baseline": None,
        "candidate_value": None,
        "difference": None,
        "ci_low": None,
        "ci_high": None,
        "p_value": None,
        "flips_better": None,
        "flips_worse": None,
        "flipped": [],
        "test": "none",
    }
    if not pairs or kind == "none":
        return row
    if kind == "corpus":
        return row | _corpus_figures(pairs, scope, settings)
    return row | _mean_figures(pairs, weights, scope, settings, kind)


def _figures(
    base: float, cand: float, interval: tuple[float, float], p: float, test: str
) -> dict[str, Any]:
    """The figures every compared row has, from its two values, interval and p-value."""
    low, high = interval
    return {
        "baseline": base,
        "candidate_value": cand,
        "difference": cand - base,
        "ci_low": low,
        "ci_high": high,
        "p_value": p,
        "test": test,
    }


def _corpus_figures(
    pairs: list[tuple[Sample, Sample]], scope: Scope, settings: stats.Settings
) -> dict[str, Any]:
    """A corpus metric (perplexity, bits per byte): documents resampled and swapped as pairs."""
    import numpy as np

    a = np.array([p[0].value for p in pairs], dtype=float)
    b = np.array([p[1].value for p in pairs], dtype=float)
    base = float(stats.corpus_value(scope.metric, a[:, 0], a[:, 1]))
    cand = float(stats.corpus_value(scope.metric, b[:, 0], b[:, 1]))
    statistic = stats.corpus_difference(scope.metric)
    interval = stats.bootstrap_interval((a[:, 0], a[:, 1], b[:, 0], b[:, 1]), statistic, settings)
    p = stats.corpus_permutation_p(scope.metric, a, b, settings)
    return _figures(base, cand, interval, p, "paired permutation (documents swapped)")


def _mean_figures(
    pairs: list[tuple[Sample, Sample]],
    weights: list[float],
    scope: Scope,
    settings: stats.Settings,
    kind: str,
) -> dict[str, Any]:
    """A per-document metric's weighted mean: the flips, McNemar (0/1, equal weights) or a
    sign-flip permutation, and a paired bootstrap interval."""
    import numpy as np

    a = np.array([float(p[0].value) for p in pairs])
    b = np.array([float(p[1].value) for p in pairs])
    w = np.asarray(weights, dtype=float)
    statistic = stats.mean_difference(w)
    base, cand = float(np.sum(w * a) / np.sum(w)), float(np.sum(w * b) / np.sum(w))
    better_sign = -1.0 if scope.lower_is_better else 1.0
    flipped = [
        flip(x, y, "better" if better_sign * (float(y.value) - float(x.value)) > 0 else "worse")
        for x, y in pairs
        if float(x.value) != float(y.value)
    ]
    up = sum(1 for f in flipped if f["direction"] == "better")
    interval = stats.bootstrap_interval((a, b), statistic, settings)
    if kind == "binary" and np.allclose(w, w[0]):
        p, test = (
            stats.mcnemar_exact(up, len(flipped) - up),
            "McNemar exact (binomial on discordant pairs)",
        )
    else:
        p, test = stats.permutation_p(a, b, statistic, settings), "paired sign-flip permutation"
    figures = _figures(base, cand, interval, p, test)
    return figures | {"flips_better": up, "flips_worse": len(flipped) - up, "flipped": flipped}


def dataset_rows(
    joined: Joined,
    result: dict[str, Any],
    task: str,
    metric: str,
    lower: bool,
    settings: stats.Settings,
) -> list[dict[str, Any]]:
    """The dataset's row and, for a group, one row per subgroup and subtask (depth-first)."""
    tree = group_tree(result, task)
    by_task: dict[str, list[tuple[Sample, Sample]]] = {}
    for pair in joined.pairs:
        by_task.setdefault(pair[0].task, []).append(pair)
    counts = {t: len(p) for t, p in by_task.items()}
    name, _, filt = metric.partition("/")
    by_size = weighting(result, tree, f"{name},{filt or 'none'}")
    rows = []
    scopes = [None, *(m.name for m in members(tree, task))] if tree else [None]
    for subtask in scopes:
        root = subtask or task
        if tree:
            per_doc = document_weights(tree, root, counts, by_size)
            pairs = [p for t in per_doc for p in by_task.get(t, [])]
            weights = [per_doc[p[0].task] for p in pairs]
        else:
            pairs, weights = joined.pairs, [1.0] * len(joined.pairs)
        scope = Scope(metric, lower, subtask)
        row: dict[str, Any] = {"subtask": subtask, "metric": metric, "lower_is_better": lower}
        row |= row_statistics(pairs, weights, scope, settings)
        if subtask is None:
            row["excluded"] = dict(joined.excluded)
            row["weighting"] = _weighting_note(tree, by_size)
        else:
            row["excluded"] = _excluded_under(joined, tree, subtask)
        rows.append(row)
    return rows


def _excluded_under(joined: Joined, tree: dict[str, list[str]], member: str) -> dict[str, int]:
    """The documents of ``member``'s subtasks left out, by reason."""
    found: Counter[str] = Counter()

    def visit(name: str) -> None:
        if name in tree:
            for child in tree[name]:
                visit(child)
        else:
            found.update(joined.by_task.get(name, Counter()))

    visit(member)
    return dict(found)


def _weighting_note(tree: dict[str, list[str]], by_size: dict[str, bool]) -> str | None:
    if not tree:
        return None
    kinds = {g: "by size" if s else "equal" for g, s in by_size.items()}
    return ", ".join(f"{g}: {k}" for g, k in kinds.items())
