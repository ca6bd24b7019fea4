"""The embedded default, end to end in a subprocess: results on disk and in MLflow agree."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.conftest import BUNDLED_TASKS, assert_mlflow_matches_results, run_harness

pytestmark = pytest.mark.slow

# Chance level of each bundled task's headline metric and the margin the trained model must
# clear (docs/getting-started.md, "The bundled model"). For bits_per_byte lower is better:
# chance is a uniform guess over the tokenizer's vocabulary, log2(vocab) bits per character.
CHANCE = {
    "arith_mc": ("acc", 0.25),
    "compare_mc": ("acc", 0.5),
    "reverse_gen": ("exact_match", 0.0),
    "successor_gen": ("exact_match", 0.0),
}
MARGIN = 0.3
BPB_MAX_FRACTION_OF_CHANCE = 0.6


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    """One `python -m harness` with no arguments but a fresh outputs folder."""
    tmp = tmp_path_factory.mktemp("default")
    start = time.perf_counter()
    proc = run_harness([f"outputs_root={tmp / 'outputs'}"], tmp)
    wall = time.perf_counter() - start
    print(f"default run wall time: {wall:.1f}s")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    runs = list((tmp / "outputs" / "runs").iterdir())
    assert len(runs) == 1
    return {"dir": runs[0], "proc": proc, "outputs": tmp / "outputs", "wall": wall}


def load_results(run_dir: Path) -> dict[str, dict]:
    return {t: json.loads((run_dir / "results" / f"{t}.json").read_text()) for t in BUNDLED_TASKS}


def test_default_run_writes_lm_eval_results(default_run):
    results = load_results(default_run["dir"])
    for task, result in results.items():
        assert task in result["results"]
        for key in ("configs", "versions", "n-shot", "higher_is_better", "n-samples"):
            assert key in result, f"{task}: lm-eval result lacks {key!r}"
    summary = json.loads((default_run["dir"] / "summary.json").read_text())
    assert summary["failed"] == []
    assert summary["load_time_s"] > 0
    for task in BUNDLED_TASKS:
        d = summary["datasets"][task]
        assert d["status"] == "ok"
        assert d["eval_time_s"] > 0
        assert d["requests"] > 0 and d["requests_per_s"] > 0 and d["tokens_per_s"] > 0
    config = (default_run["dir"] / "config.yaml").read_text()
    assert "tiny_char" in config and "${" not in config


def test_default_run_prints_progress_and_table(default_run):
    out = default_run["proc"].stdout
    for i, task in enumerate(BUNDLED_TASKS, start=1):
        assert f"[{i}/5] {task} ..." in out
        assert f"[{i}/5] {task} ok in " in out
    assert "dataset" in out and "tok/s" in out
    assert "Traceback" not in default_run["proc"].stderr


def test_mlflow_matches_results(default_run):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{default_run['outputs'] / 'mlflow.db'}")
    assert_mlflow_matches_results(client, default_run["dir"], BUNDLED_TASKS)


def test_trained_model_beats_chance(default_run):
    results = load_results(default_run["dir"])
    for task, (metric, chance) in CHANCE.items():
        score = results[task]["results"][task][f"{metric},none"]
        assert score >= chance + MARGIN, f"{task} {metric}={score} vs chance {chance}"
    vocab = json.loads(
        (Path(__file__).parents[1] / "plugins/models/tiny_char/config.json").read_text()
    )["vocab_size"]
    import math

    bpb = results["story_ppl"]["results"]["story_ppl"]["bits_per_byte,none"]
    assert bpb <= BPB_MAX_FRACTION_OF_CHANCE * math.log2(vocab), bpb


def test_default_console_is_quiet(default_run):
    proc = default_run["proc"]
    lines = (proc.stdout + proc.stderr).splitlines()  # a progress bar's \r counts as a line too
    # The tests set OMP_NUM_THREADS=1 (tests/conftest.py), which the plan's note reports: a line
    # this environment adds, not the default run's.
    lines = [line for line in lines if "note: OMP_NUM_THREADS=" not in line]
    assert len(lines) <= 21, "\n".join(lines)  # 21: the run's MLflow link with how to serve it
    text = "\n".join(lines)
    for chatter in ("[INFO]", "Building contexts", "Running loglikelihood", "it/s", "fatal:"):
        assert chatter not in text, f"{chatter!r} on the console:\n{text}"
    assert lines[0].startswith("plan: tiny_char | strategy single | tier local | hf on cpu")
    assert lines[0].endswith("| FITS")


def test_default_run_log_file_holds_the_whole_story(default_run):
    log = (default_run["dir"] / "harness.log").read_text()
    assert "[harness.phase][INFO] \nplan: tiny_char | strategy single | tier local | FITS" in log
    assert "needed/budget" in log  # the full plan table, though the console showed one line
    assert "loading tiny_char (single) ..." in log and "loaded tiny_char in " in log
    for i, task in enumerate(BUNDLED_TASKS, start=1):
        assert f"[harness.phase][INFO] [{i}/5] {task} ok in " in log
        assert f"[lm_eval.api.task][INFO] Building contexts for {task} on rank 0" in log
    assert "[lm_eval.evaluator][INFO] Running loglikelihood requests" in log
    assert "Creating initial MLflow database tables" in log  # mlflow's INFO, off the console
    assert "tok/s" in log and f"results: {default_run['dir']}" in log
