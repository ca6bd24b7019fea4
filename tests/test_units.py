"""Small pure pieces: metric naming, param flattening, atomic writes, validation rules."""

from __future__ import annotations

import json

import pytest

from harness.config.schema import to_run_config
from harness.config.validate import config_problems
from harness.errors import ConfigError, did_you_mean
from harness.record.files import write_json_atomic
from harness.record.metrics import headline_entry, metric_items
from harness.runner import make_checked_plan
from harness.tracking import flatten, local_uri


def test_metric_items_names_metrics_for_mlflow():
    entry = {
        "alias": "x",
        "acc,none": 0.5,
        "acc_stderr,none": "N/A",
        "exact_match,strict-match": 1,
        "bits_per_byte,none": float("nan"),
        "sample_len": 10,
    }
    assert metric_items(entry) == {"acc": 0.5, "exact_match/strict-match": 1.0}


def test_headline_entry_prefers_group_then_task():
    result = {
        "results": {"a": {"acc,none": 1.0}, "b": {"acc,none": 0.0}},
        "groups": {"g": {"x": 1}},
    }
    assert headline_entry(result, "g") == {"x": 1}
    assert headline_entry(result, "b") == {"acc,none": 0.0}
    assert headline_entry(result, "missing") == {}


def test_flatten_gives_stable_dotted_names():
    tree = {"model": {"name": "m", "n": 1}, "dataset": {"a": {"limit": None}}, "paths": ["x", "y"]}
    assert dict(flatten(tree)) == {
        "model.name": "m",
        "model.n": "1",
        "dataset.a.limit": "None",
        "paths": "x,y",
    }


def test_local_uri_is_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert local_uri("sqlite:///out/mlflow.db") == f"sqlite:///{tmp_path}/out/mlflow.db"
    assert local_uri("sqlite:////abs/x.db") == "sqlite:////abs/x.db"
    assert local_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"


def test_atomic_write_leaves_no_temporary_files(tmp_path):
    target = tmp_path / "sub" / "r.json"
    write_json_atomic(target, {"a": 1})
    write_json_atomic(target, {"a": 2})
    assert json.loads(target.read_text()) == {"a": 2}
    assert [p.name for p in target.parent.iterdir()] == ["r.json"]


def test_did_you_mean():
    assert "'arith_mc'" in did_you_mean("arith_mcc", ["arith_mc", "compare_mc"])
    assert did_you_mean("zzz", ["arith_mc"]) == ""


def test_validation_collects_every_problem(compose_cfg):
    cfg = compose_cfg(
        "strategy.batch_size=0",
        "strategy.tensor_parallel_size=2",
        "dataset.arith_mc.limit=-1",
        "dataset.compare_mc.num_fewshot=-2",
        "model.pretrained=plugins/models/nowhere",
    )
    with pytest.raises(ConfigError) as info:
        make_checked_plan(to_run_config(cfg))
    problems = info.value.problems
    assert len(problems) == 5, problems
    text = str(info.value)
    for needle in (
        "strategy.batch_size=0",
        "tp=2",
        "dataset.arith_mc.limit=-1",
        "dataset.compare_mc.num_fewshot=-2",
        "plugins/models/nowhere",
    ):
        assert needle in text
    assert text.count("Fix:") == 5


def test_offline_hub_model_not_cached_is_refused(compose_cfg):
    cfg = compose_cfg("model.pretrained=someorg/somemodel")
    (problem,) = config_problems(to_run_config(cfg))
    assert "not in the local Hugging Face cache" in problem
