"""The paired tests a comparison states, computed with scipy (imported inside the functions).

- 0/1 per-sample metrics (acc, exact_match): McNemar's exact test on the discordant pairs, which
  is the two-sided binomial test of ``better`` successes in ``better + worse`` trials at p=0.5
  (``scipy.stats.binomtest``);
- any per-sample score, and 0/1 metrics weighted unevenly (an lm-eval group weighting its
  members equally): a paired sign-flip permutation test (``scipy.stats.permutation_test``,
  ``permutation_type='samples'``);
- corpus metrics (``word_perplexity``: a per-document loglikelihood and word count): the same
  permutation test on the corpus figure, each document's pair swapped or not;
- every row: a paired percentile bootstrap interval of the difference (``scipy.stats.bootstrap``
  with ``paired=True``), seeded;
- Holm's step-down correction across a candidate's rows (``holm``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

CORPUS = ("word_perplexity", "byte_perplexity", "bits_per_byte")
"""Metrics lm-eval computes over the whole corpus from each document's (loglikelihood, length)
pair: no per-sample score exists, the comparison resamples documents."""


@dataclass(frozen=True)
class Settings:
    """How the statistics are computed (compare.json's ``settings``)."""

    alpha: float = 0.05
    """Significance level of every test (after Holm) and 1 - the interval's confidence."""
    resamples: int = 9999
    """Bootstrap resamples and permutations."""
    seed: int = 0
    """Seed of the bootstrap and permutation draws (the same inputs give the same figures)."""


def mcnemar_exact(better: int, worse: int) -> float:
    """McNemar's exact two-sided p-value from the discordant pairs (1.0 when there are none)."""
    from scipy.stats import binomtest

    if better + worse == 0:
        return 1.0
    return float(binomtest(better, better + worse, 0.5).pvalue)


def mean_difference(weights: Any) -> Callable[..., Any]:
    """The statistic ``sum(w (b - a)) / sum(w)`` over paired arrays (vectorized on ``axis``);
    with equal weights, the plain mean difference."""
    import numpy as np

    w = np.asarray(weights, dtype=float)

    def statistic(a: Any, b: Any, axis: int = -1) -> Any:
        return np.sum(w * (b - a), axis=axis) / np.sum(w)

    return statistic


def corpus_value(metric: str, ll: Any, length: Any, axis: int = -1) -> Any:
    """lm-eval's corpus figure of ``metric`` from loglikelihoods and lengths (words or bytes):
    ``exp(-sum ll / sum n)`` for the perplexities, ``-sum ll / sum n / ln 2`` for bits/byte."""
    import numpy as np

    ratio = -np.sum(ll, axis=axis) / np.sum(length, axis=axis)
    return ratio / math.log(2) if metric == "bits_per_byte" else np.exp(ratio)


def bootstrap_interval(
    data: Sequence[Any], statistic: Callable[..., Any], settings: Settings
) -> tuple[float, float]:
    """A paired percentile bootstrap interval of ``statistic`` over ``data`` (arrays of one
    length, resampled together)."""
    import numpy as np
    from scipy.stats import bootstrap

    arrays = [np.asarray(d, dtype=float) for d in data]
    if len(arrays[0]) < 2:
        value = float(statistic(*arrays))
        return value, value
    found = bootstrap(
        tuple(arrays),
        statistic,
        paired=True,
        vectorized=True,
        n_resamples=settings.resamples,
        confidence_level=1 - settings.alpha,
        method="percentile",
        rng=np.random.default_rng(settings.seed),
    )
    low, high = found.confidence_interval
    return float(low), float(high)


def permutation_p(a: Any, b: Any, statistic: Callable[..., Any], settings: Settings) -> float:
    """The two-sided p-value of a paired sign-flip permutation test: each pair's two values
    swapped or not (exactly, when there are few enough pairs)."""
    import numpy as np
    from scipy.stats import permutation_test

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(a) == 0 or np.array_equal(a, b):
        return 1.0
    found = permutation_test(
        (a, b),
        statistic,
        permutation_type="samples",
        vectorized=True,
        n_resamples=settings.resamples,
        alternative="two-sided",
        rng=np.random.default_rng(settings.seed),
    )
    return float(min(1.0, found.pvalue))


def corpus_difference(metric: str) -> Callable[..., Any]:
    """The statistic ``corpus(b) - corpus(a)`` over (ll_a, n_a, ll_b, n_b) arrays."""

    def statistic(ll_a: Any, n_a: Any, ll_b: Any, n_b: Any, axis: int = -1) -> Any:
        return corpus_value(metric, ll_b, n_b, axis) - corpus_value(metric, ll_a, n_a, axis)

    return statistic


def corpus_permutation_p(metric: str, a: Any, b: Any, settings: Settings) -> float:
    """The two-sided permutation p-value of ``corpus(b) - corpus(a)``, each document's two
    (loglikelihood, length) pairs swapped or not. scipy swaps the values of a pair; here those
    values are row numbers into the stacked pairs, so a swap moves a whole pair."""
    import numpy as np

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    n = len(a)
    if n == 0 or np.array_equal(a, b):
        return 1.0
    stacked = np.concatenate([a, b])
    difference = corpus_difference(metric)

    def statistic(rows_a: Any, rows_b: Any, axis: int = -1) -> Any:
        ia, ib = rows_a.astype(int), rows_b.astype(int)
        return difference(stacked[ia, 0], stacked[ia, 1], stacked[ib, 0], stacked[ib, 1], axis)

    return permutation_p(np.arange(n), np.arange(n) + n, statistic, settings)


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjusted p-values (None stays None): the i-th smallest of m is
    multiplied by m - i, and each kept at least the one before it, capped at 1."""
    ranked = sorted((p, i) for i, p in enumerate(p_values) if p is not None)
    m = len(ranked)
    adjusted: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, (p, index) in enumerate(ranked):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[index] = running
    return adjusted
