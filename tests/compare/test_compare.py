"""The paired comparison on run directories written as harness writes them (fast: no model, no
MLflow): identity joins, shared samples, refusals, the gate, groups, and the statistics checked
against statsmodels' and scipy's own."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from harness.report.cli import main
from tests.compare.records import Dataset, Task, write_run


def compare(tmp_path: Path, capsys, baseline: Path, *candidates: Path, extra=()) -> tuple:
    """``python -m harness.report --baseline ... --runs ...`` in process: (exit code,
    compare.json or None, stdout, stderr)."""
    out = tmp_path / "out"
    argv = ["--baseline", str(baseline), "--runs", *map(str, candidates), "--out", str(out),
            "--resamples", "999", *extra]  # fmt: skip
    with pytest.raises(SystemExit) as ended:
        main(argv)
    captured = capsys.readouterr()
    path = out / "compare.json"
    document = json.loads(path.read_text()) if path.is_file() else None
    return ended.value.code, document, captured.out, captured.err


def one(name: str, scores: dict[int, float], **task) -> list[Dataset]:
    return [Dataset(name, [Task(name, scores, **task)])]


def test_identical_runs_have_no_flip_and_pass(tmp_path, capsys):
    scores = {i: float(i % 3 != 0) for i in range(30)}
    a = write_run(tmp_path / "a", one("arith", scores))
    code, doc, out, _ = compare(tmp_path, capsys, a, a, extra=["--fail-if-worse", "0"])
    (row,) = doc["rows"]
    assert code == 0 and doc["exit_code"] == 0 and "PASS" in out
    assert row["flips_better"] == row["flips_worse"] == 0 and row["flipped"] == []
    assert row["difference"] == 0 and row["verdict"] == "same" and row["shared"] == 30
    assert row["excluded"] == {} and row["p_value"] == 1.0


def test_flips_and_statistics_equal_statsmodels_and_scipy(tmp_path, capsys):
    from scipy.stats import bootstrap
    from statsmodels.stats.contingency_tables import mcnemar

    rng = np.random.default_rng(3)
    base = {i: float(rng.random() < 0.7) for i in range(80)}
    cand = dict(base)
    for doc in (1, 4, 9, 16, 25, 36, 49, 64, 2, 3, 5, 7):
        cand[doc] = 1.0 - cand[doc]
    a = write_run(tmp_path / "a", one("arith", base))
    b = write_run(tmp_path / "b", one("arith", cand))
    code, doc, _, _ = compare(tmp_path, capsys, a, b)
    (row,) = doc["rows"]
    better = sorted(d for d in base if base[d] == 0 and cand[d] == 1)
    worse = sorted(d for d in base if base[d] == 1 and cand[d] == 0)
    assert row["flips_better"] == len(better) and row["flips_worse"] == len(worse)
    listed = {f["doc_id"]: f["direction"] for f in row["flipped"]}
    assert listed == {**dict.fromkeys(better, "better"), **dict.fromkeys(worse, "worse")}
    flip = next(f for f in row["flipped"] if f["doc_id"] == better[0])
    assert (
        flip["prompt"] == f"arith q{better[0]}="
        and flip["baseline_answer"] != flip["candidate_answer"]
    )
    both = sum(1 for d in base if base[d] == cand[d] == 1)
    neither = sum(1 for d in base if base[d] == cand[d] == 0)
    table = [[both, len(worse)], [len(better), neither]]
    assert row["p_value"] == pytest.approx(mcnemar(table, exact=True).pvalue, abs=1e-12)
    x = np.array([base[d] for d in sorted(base)])
    y = np.array([cand[d] for d in sorted(base)])
    expected = bootstrap((x, y), lambda p, q, axis: np.mean(q - p, axis=axis), paired=True,
                         n_resamples=999, confidence_level=0.95, method="percentile",
                         rng=np.random.default_rng(0)).confidence_interval  # fmt: skip
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((expected.low, expected.high))
    assert row["difference"] == pytest.approx(y.mean() - x.mean())
    assert row["test"].startswith("McNemar") and code == 0


def test_different_limits_compare_exactly_the_shared_samples(tmp_path, capsys):
    base = {i: 1.0 for i in range(40)}
    cand = {i: 0.0 if i in (3, 5) else 1.0 for i in range(10, 25)}
    a = write_run(tmp_path / "a", one("arith", base))
    b = write_run(tmp_path / "b", one("arith", cand))
    code, doc, out, _ = compare(tmp_path, capsys, a, b)
    (row,) = doc["rows"]
    assert row["shared"] == 15 and row["excluded"] == {"only_in_baseline": 25}
    assert row["flips_worse"] == 0  # docs 3 and 5 are not shared: never compared
    assert "15 samples shared, left out: 25 only_in_baseline" in out and code == 0


def test_different_few_shot_prompts_are_not_the_same_question(tmp_path, capsys):
    scores = {i: 1.0 for i in range(12)}
    a = write_run(tmp_path / "a", one("arith", scores))
    b = write_run(tmp_path / "b", one("arith", {i: 0.0 for i in range(12)}, shots=2))
    code, doc, _, err = compare(tmp_path, capsys, a, b)
    assert code == 2 and doc is None
    assert "share no sample (12 the prompt differs" in err and "Fix:" in err


def test_a_task_version_change_leaves_those_samples_out(tmp_path, capsys):
    a = write_run(tmp_path / "a", one("arith", {i: 1.0 for i in range(6)}))
    b = write_run(tmp_path / "b", one("arith", {i: 1.0 for i in range(6)}, version=2.0))
    code, _, _, err = compare(tmp_path, capsys, a, b)
    assert code == 2 and "6 the task's version differs" in err


def test_different_tasks_are_refused(tmp_path, capsys):
    a = write_run(tmp_path / "a", one("arith", {i: 1.0 for i in range(6)}))
    b = write_run(tmp_path / "b", one("other", {i: 1.0 for i in range(6)}))
    code, doc, _, err = compare(tmp_path, capsys, a, b)
    assert code == 2 and doc is None and "shares no finished dataset" in err
    c = write_run(tmp_path / "c", [Dataset("arith", [Task("other", {0: 1.0})])])
    code, _, _, err = compare(tmp_path, capsys, a, c)
    assert code == 2 and "runs of different tasks are never compared" in err


def test_the_gate_fails_a_worse_dataset_and_names_it(tmp_path, capsys):
    base = {i: 1.0 for i in range(60)}
    worse = {i: 0.0 if i < 20 else 1.0 for i in range(60)}
    a = write_run(tmp_path / "a", [*one("arith", base), *one("words", base)])
    b = write_run(tmp_path / "b", [*one("arith", base), *one("words", worse)])
    code, doc, out, _ = compare(tmp_path, capsys, a, b, extra=["--fail-if-worse", "0.05"])
    assert code == 1 and doc["exit_code"] == 1
    assert [r["verdict"] for r in doc["rows"]] == ["same", "worse"]
    assert "FAIL" in out and "words" in out.splitlines()[-1]
    assert "arith" not in out.splitlines()[-1]
    code, _, _, _ = compare(tmp_path, capsys, a, b, extra=["--fail-if-worse", "0.5"])
    assert code == 0  # worse by 0.33: under the allowed 0.5
    code, doc, out, _ = compare(tmp_path, capsys, b, a, extra=["--fail-if-worse", "0"])
    assert code == 0 and doc["rows"][1]["verdict"] == "better" and "PASS" in out


def test_holm_equals_statsmodels(tmp_path):
    from statsmodels.stats.multitest import multipletests

    from harness.compare.stats import holm

    p = [0.01, 0.04, 0.03, 0.2, 0.005, 0.5]
    assert holm(p) == pytest.approx(list(multipletests(p, method="holm")[1]))
    assert holm([0.02, None, 0.01]) == pytest.approx([0.02, None, 0.02])


def test_a_group_compares_per_subtask_and_as_lm_eval_weights_it(tmp_path, capsys):
    """Two subtasks of unequal sizes under a group weighting its members equally: the group's
    figures are lm-eval's own (the mean of the two subtasks' means), not the pooled mean."""
    small_a, small_b = {i: 1.0 for i in range(10)}, {i: float(i >= 6) for i in range(10)}
    big = {i: float(i % 2) for i in range(50)}
    base = [Dataset("suite", [Task("t_small", small_a), Task("t_big", big)], group="suite",
                    weight_by_size=False)]  # fmt: skip
    cand = [Dataset("suite", [Task("t_small", small_b), Task("t_big", big)], group="suite",
                    weight_by_size=False)]  # fmt: skip
    a, b = write_run(tmp_path / "a", base), write_run(tmp_path / "b", cand)
    code, doc, _, _ = compare(tmp_path, capsys, a, b)
    assert code == 0
    rows = {r["subtask"]: r for r in doc["rows"]}
    assert list(rows) == [None, "t_small", "t_big"]
    group = rows[None]
    baseline_figure = json.loads((a / "results" / "suite.json").read_text())["results"]["suite"]
    assert group["baseline"] == pytest.approx(baseline_figure["acc,none"])  # lm-eval's figure
    assert group["difference"] == pytest.approx((0.4 - 1.0) / 2)  # equal weights, not -6/60
    assert group["weighting"] == "suite: equal" and group["shared"] == 60
    assert group["test"] == "paired sign-flip permutation"  # uneven document weights
    assert rows["t_small"]["flips_worse"] == 6 and rows["t_big"]["flips_worse"] == 0
    assert rows["t_small"]["difference"] == pytest.approx(-0.6)
    assert {f["task"] for f in group["flipped"]} == {"t_small"}
    sized = [Dataset("suite", [Task("t_small", small_a), Task("t_big", big)], group="suite")]
    sized_b = [Dataset("suite", [Task("t_small", small_b), Task("t_big", big)], group="suite")]
    a2, b2 = write_run(tmp_path / "a2", sized), write_run(tmp_path / "b2", sized_b)
    _, doc, _, _ = compare(tmp_path, capsys, a2, b2)
    group = doc["rows"][0]
    assert group["difference"] == pytest.approx(-6 / 60) and group["weighting"] == "suite: by size"
    assert group["test"].startswith("McNemar")
    holm = [r["p_value_holm"] for r in doc["rows"]]
    assert all(h >= r["p_value"] for h, r in zip(holm, doc["rows"], strict=True))


def test_a_continuous_score_uses_the_paired_permutation_test(tmp_path, capsys):
    from scipy.stats import permutation_test

    rng = np.random.default_rng(1)
    base = {i: float(rng.random()) for i in range(25)}
    cand = {i: v + 0.05 * float(rng.random()) for i, v in base.items()}
    a = write_run(tmp_path / "a", one("scored", base, metric="f1"))
    b = write_run(tmp_path / "b", one("scored", cand, metric="f1"))
    _, doc, _, _ = compare(tmp_path, capsys, a, b)
    (row,) = doc["rows"]
    x, y = np.array(list(base.values())), np.array(list(cand.values()))
    expected = permutation_test((x, y), lambda p, q, axis: np.mean(q - p, axis=axis),
                                permutation_type="samples", vectorized=True, n_resamples=999,
                                rng=np.random.default_rng(0)).pvalue  # fmt: skip
    assert row["kind"] == "continuous" and row["p_value"] == pytest.approx(expected)
    assert row["verdict"] == "better" and row["flips_better"] == 25


def test_bad_options_and_missing_runs_exit_2(tmp_path, capsys):
    a = write_run(tmp_path / "a", one("arith", {0: 1.0}))
    code, _, _, err = compare(tmp_path, capsys, a, a, extra=["--alpha", "2"])
    assert code == 2 and "--alpha 2" in err
    store = ["--tracking-uri", f"sqlite:///{tmp_path}/none.db"]
    code, _, _, err = compare(tmp_path, capsys, a, tmp_path / "a" / "nope", extra=store)
    assert code == 2 and "Fix:" in err
    code, _, _, err = compare(tmp_path, capsys, a, Path("colour=blue"))
    assert code == 2 and "'colour'" in err


def test_a_groups_subtasks_say_what_each_left_out(tmp_path, capsys):
    ones = {i: 1.0 for i in range(6)}
    base = [Dataset("suite", [Task("t1", {i: 1.0 for i in range(10)}), Task("t2", ones)], "suite")]
    cand = [Dataset("suite", [Task("t1", ones | {}), Task("t2", ones, shots=1)], "suite")]
    a, b = write_run(tmp_path / "a", base), write_run(tmp_path / "b", cand)
    code, doc, _, _ = compare(tmp_path, capsys, a, b)
    rows = {r["subtask"]: r for r in doc["rows"]}
    assert code == 0 and rows[None]["shared"] == 6
    assert rows[None]["excluded"] == {"only_in_baseline": 4, "prompt_differs": 6}
    assert rows["t1"]["excluded"] == {"only_in_baseline": 4} and rows["t1"]["shared"] == 6
    assert rows["t2"]["excluded"] == {"prompt_differs": 6} and rows["t2"]["shared"] == 0


def test_a_store_that_cannot_be_written_is_a_warning(tmp_path, caplog):
    from harness.compare.log_run import log_comparison, row_metrics

    rows = [{"dataset": "suite", "subtask": None, "difference": -0.5, "p_value": 0.01,
             "flips_worse": 3, "ci_low": None},
            {"dataset": "suite", "subtask": "t@1", "difference": 0.0}]  # fmt: skip
    assert row_metrics(rows) == {"suite/difference": -0.5, "suite/p_value": 0.01,
                                 "suite/flips_worse": 3.0, "suite/t_1/difference": 0.0}  # fmt: skip
    run = {"run_id": "a", "name": "a"}
    document = {"baseline": run, "candidates": [run], "rows": [], "exit_code": 0}
    with caplog.at_level("WARNING"):
        assert log_comparison("nosuch://store", document, tmp_path / "compare.json") == []
    assert "not logged to MLflow" in caplog.text


def test_a_corpus_metric_is_compared_on_its_corpus_figure(tmp_path):
    """word_perplexity has no per-sample score: each document's (loglikelihood, words) pair is
    resampled or swapped whole, and the figure is lm-eval's exp(-sum ll / sum words)."""
    from harness.compare.rows import Scope, row_statistics
    from harness.compare.samples import Sample
    from harness.compare.stats import Settings

    rng = np.random.default_rng(2)
    words = rng.integers(5, 20, size=30)
    ll_a = -1.0 * words - rng.random(30)
    ll_b = ll_a - 0.5 * words  # every document less likely: a higher perplexity

    def sample(doc, ll, n):
        return Sample("story", doc, "p", [float(ll), int(n)], "", "")

    pairs = [(sample(i, ll_a[i], words[i]), sample(i, ll_b[i], words[i])) for i in range(30)]
    scope, settings = Scope("word_perplexity", True, None), Settings(resamples=999)
    row = row_statistics(pairs, [1.0] * 30, scope, settings)
    assert row["kind"] == "corpus" and row["flips_better"] is None
    assert row["baseline"] == pytest.approx(np.exp(-ll_a.sum() / words.sum()))
    assert row["candidate_value"] == pytest.approx(np.exp(-ll_b.sum() / words.sum()))
    assert row["ci_low"] > 0 and row["p_value"] < 0.01  # worse on every document
    same = row_statistics([(a, a) for a, _ in pairs], [1.0] * 30, scope, settings)
    assert same["difference"] == 0 and same["p_value"] == 1.0
