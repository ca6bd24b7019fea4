"""What a dataset's numbers are called and which one stands for it: the headline-metric rule.

One rule for everything that names a dataset's figure (the MLflow child run's ``headline`` tag,
the comparison report's table and chart), so the two never disagree.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

PLACEHOLDERS = {"bypass"}
"""lm-eval's stand-ins for a metric, no score: ``predict_only`` sets every task's metric to
``bypass``, whose value is always 999."""


def is_placeholder(metric: str) -> bool:
    """Whether ``metric`` (as logged: ``bypass``, ``bypass_stderr/strict-match``) is one of
    ``PLACEHOLDERS`` or its stderr."""
    name = metric.partition(",")[0].partition("/")[0]
    return name.removesuffix("_stderr") in PLACEHOLDERS


def without_placeholders(metrics: dict[str, float]) -> dict[str, float]:
    """``metrics`` less lm-eval's placeholders (a result stored before they were left out)."""
    return {k: v for k, v in metrics.items() if not is_placeholder(k)}


def metric_items(entry: dict[str, Any]) -> dict[str, float]:
    """Numeric metrics of one lm-eval result entry, named for MLflow.

    lm-eval keys metrics as ``"<metric>,<filter>"`` (``"acc,none"``); MLflow names may not hold
    commas, so ``acc,none`` becomes ``acc`` and ``exact_match,strict-match`` becomes
    ``exact_match/strict-match``. Non-numbers (``"N/A"`` stderr, aliases) are left out, and so
    is ``predict_only``'s placeholder (``bypass=999``: no metric was computed).
    """
    out: dict[str, float] = {}
    for key, value in entry.items():
        if "," not in key or isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if is_placeholder(key):
            continue
        if isinstance(value, float) and not math.isfinite(value):
            continue
        metric, _, filt = key.partition(",")
        out[metric if filt == "none" else f"{metric}/{filt}"] = float(value)
    return out


def headline_entry(result: dict[str, Any], task: str) -> dict[str, Any]:
    """The result entry that stands for the whole dataset: its group, else its task."""
    groups = result.get("groups") or {}
    if task in groups:
        return dict(groups[task])
    results = result.get("results") or {}
    if task in results:
        return dict(results[task])
    if len(results) == 1:
        return dict(next(iter(results.values())))
    return {}


HEADLINE_ORDER = (
    "acc",
    "exact_match",
    "exact_match/strict-match",
    "exact_match/flexible-extract",
    "acc_norm",
    "f1",
    "mcc",
    "bleu",
    "word_perplexity",
    "bits_per_byte",
    "byte_perplexity",
    "perplexity",
)
"""The metric that stands for a dataset: the first of these the dataset has (lm-eval's usual
headline for multiple choice, generation and perplexity tasks), else its first score by name."""

LOWER_IS_BETTER = {"word_perplexity", "byte_perplexity", "bits_per_byte", "perplexity"}
"""Headline metrics where a smaller value is better (the table and chart say so)."""

_NOT_SCORES = {"eval_time_s", "requests", "requests_per_s", "tokens_per_s", "tokens_per_joule"}
_NOT_SCORE_PREFIX = re.compile(r"^(telemetry/|gpu\d+/|[^/]+/gpu\d+/)")


def stderr_name(metric: str) -> str:
    """lm-eval's stderr of a metric as logged: ``acc`` -> ``acc_stderr``,
    ``exact_match/strict-match`` -> ``exact_match_stderr/strict-match``."""
    name, slash, filt = metric.partition("/")
    return f"{name}_stderr{slash}{filt}"


def is_score(key: str) -> bool:
    """Whether a child run's metric is one of lm-eval's scores (not stderr, timing, telemetry)."""
    return (
        key not in _NOT_SCORES
        and not is_placeholder(key)
        and not _NOT_SCORE_PREFIX.match(key)
        and "_stderr" not in key.partition("/")[0]
    )


def headline(metric_names: set[str]) -> str | None:
    """The headline metric among a dataset's metric names (see ``HEADLINE_ORDER``)."""
    for name in HEADLINE_ORDER:
        if name in metric_names:
            return name
    filtered = sorted(m for m in metric_names if m.startswith("exact_match/") and is_score(m))
    if filtered:
        return filtered[0]
    scores = sorted(m for m in metric_names if is_score(m))
    return scores[0] if scores else None


def lower_is_better(metric: str, higher_is_better: Mapping[str, Any] | None = None) -> bool:
    """Whether a smaller value of ``metric`` is better.

    lm-eval's own answer comes first where the result carries it (``higher_is_better`` of the
    task, keyed by metric name without its filter); ``LOWER_IS_BETTER`` holds for the rest.
    """
    name = metric.partition("/")[0]
    if higher_is_better and name in higher_is_better:
        return not bool(higher_is_better[name])
    return name in LOWER_IS_BETTER
