"""MLflow's params say what ran: the config as typed, and the plan as ``plan.*``.

A real run (CPU, the bundled model, ``strategy=auto``) whose YAML figures the checkpoint
contradicts: ``model.*`` params keep what was typed, ``plan.*`` hold what was planned and loaded,
equal to ``summary.json["plan"]`` and ``plan.json``; config.yaml stays the config as typed.
"""

from __future__ import annotations

import json

import pytest
import yaml

from harness.tracking.rundir import PLAN_PROSE
from tests.conftest import run_harness


def _flat(tree: object, prefix: str = "") -> dict[str, str]:
    if isinstance(tree, dict):
        out: dict[str, str] = {}
        for key, value in tree.items():
            out |= _flat(value, f"{prefix}{key}.")
        return out
    if isinstance(tree, list):
        return {prefix[:-1]: ",".join(str(v) for v in tree)}
    return {prefix[:-1]: str(tree)}


@pytest.mark.slow
def test_plan_params_are_the_plan_and_the_checkpoint_facts_win(tmp_path):
    from mlflow.tracking import MlflowClient

    db, run_dir = tmp_path / "mlflow.db", tmp_path / "run"
    proc = run_harness(
        [
            "strategy=auto",
            "dataset=[arith_mc]",
            "dataset.arith_mc.limit=20",
            "model.num_layers=6",  # the checkpoint has 4
            "model.context_window=512",  # and 256
            "tracking=local",
            f"tracking.uri=sqlite:///{db}",
            f"output_dir={run_dir}",
            f"outputs_root={tmp_path / 'outputs'}",
        ],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    plan = summary["plan"]
    assert json.loads((run_dir / "plan.json").read_text()) == plan
    assert plan["model_facts"]["num_layers"] == 4 and plan["max_model_len"] == 256
    typed = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert typed["model"]["num_layers"] == 6 and typed["strategy"]["name"] == "auto"

    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    (experiment,) = [e for e in client.search_experiments() if e.name == "harness"]
    parents = [
        r
        for r in client.search_runs([experiment.experiment_id])
        if r.data.tags.get("mlflow.parentRunId") is None
    ]
    (parent,) = parents
    params = parent.data.params
    logged = {k.removeprefix("plan."): v for k, v in params.items() if k.startswith("plan.")}
    expected = _flat({k: v for k, v in plan.items() if k not in PLAN_PROSE})
    assert logged == expected
    assert params["plan.model_facts.num_layers"] == "4"  # what was loaded
    assert params["model.num_layers"] == "6"  # what was typed
    assert params["strategy.name"] == "auto" and params["plan.strategy"] == plan["strategy"]
    assert params["plan.replica_backend"] == "inline" and params["plan.engine"] == "hf"
    assert params["plan.dtype"] == "float32"
    assert "disagrees with conf/model/tiny_char.yaml" in " ".join(plan["notes"])
