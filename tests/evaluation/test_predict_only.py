"""``predict_only=true``: lm-eval computes no metric and reports a placeholder (``bypass=999``)
for every task; harness shows no metric anywhere (console table, summary.json, MLflow's metrics
and runs-table view) and says the dataset's outputs were recorded instead (issue #35)."""

from __future__ import annotations

import json

import pytest

from harness.record.metrics import headline, is_score, metric_items, without_placeholders
from harness.views import format_summary
from tests.conftest import run_harness

PREDICT_ONLY_ENTRY = {"alias": "reverse_gen", "bypass,none": 999, "bypass_stderr,none": "N/A"}
"""lm-eval 0.4.13's result entry of a generation task under ``--predict_only``."""


def test_lm_evals_placeholder_is_no_metric():
    assert metric_items(PREDICT_ONLY_ENTRY) == {}
    assert metric_items({"acc,none": 0.5, "bypass,none": 999}) == {"acc": 0.5}
    assert not is_score("bypass") and not is_score("bypass/strict-match")
    assert headline({"bypass", "bypass_stderr"}) is None  # no runs-table column for it
    stored = {"bypass": 999.0, "exact_match": 1.0}  # a result stored before it was left out
    assert without_placeholders(stored) == {"exact_match": 1.0}


def summary_of(metrics: dict, evaluation: dict) -> dict:
    dataset = {"status": "ok", "metrics": metrics, "evaluation": evaluation, "eval_time_s": 1.0}
    dataset |= {"requests_per_s": 1.0, "tokens_per_s": 1.0}
    return {"datasets": {"gen": dataset}, "model": "m", "strategy": "s", "load_time_s": 0.0}


def test_the_final_table_says_predict_only_instead_of_a_metric():
    table = format_summary(
        summary_of({}, {"predict_only": True}) | {"total_time_s": 1, "run_dir": "r"}
    )
    assert "predict-only: outputs in samples/" in table and "bypass" not in table
    plain = format_summary(
        summary_of({"exact_match": 1.0}, {}) | {"total_time_s": 1, "run_dir": "r"}
    )
    assert "exact_match=1" in plain and "predict-only" not in plain


@pytest.mark.slow  # loads the bundled model; a real MLflow server over HTTP
def test_predict_only_shows_no_metric_anywhere(tmp_path):
    from mlflow.tracking import MlflowClient

    from tests.tracking.test_tracking_server import serve_mlflow

    server = serve_mlflow(tmp_path / "mlflow")
    url = next(server)
    try:
        run_dir = tmp_path / "run"
        proc = run_harness(
            [
                "dataset=[reverse_gen]",
                "dataset.reverse_gen.limit=6",
                "predict_only=true",
                "tracking=server",
                f"tracking.uri={url}",
                f"output_dir={run_dir}",
                f"outputs_root={tmp_path / 'outputs'}",
            ],
            tmp_path,
        )
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
        assert "bypass" not in proc.stdout + proc.stderr, proc.stdout[-3000:]
        assert "predict-only: no metric, outputs recorded in" in proc.stdout
        assert "predict-only: outputs in samples/" in proc.stdout  # the final table
        summary = json.loads((run_dir / "summary.json").read_text())
        dataset = summary["datasets"]["reverse_gen"]
        assert dataset["metrics"] == {} and dataset["samples_file"], dataset
        assert dataset["evaluation"] == {"predict_only": True}
        client = MlflowClient(tracking_uri=url)
        experiment = client.get_experiment_by_name("harness")
        runs = client.search_runs([experiment.experiment_id])
        assert len(runs) == 2  # the parent and the dataset's child
        for run in runs:
            assert not [m for m in run.data.metrics if "bypass" in m], run.data.metrics
        view = json.dumps(client.get_experiment(experiment.experiment_id).tags)
        assert "bypass" not in view  # no runs-table column
    finally:
        server.close()
