"""lm-eval's evaluation settings (harness/config/evaluation.py): each dataset's settings, and
the key its stored result is reused under (a change of any one evaluates again; none keys the
result as before the settings existed)."""

from __future__ import annotations

import pytest

from harness.config.evaluation import EvalSettings, parse_gen_kwargs, settings_for
from harness.config.schema import to_run_config


def test_a_dataset_setting_wins_over_the_runs(compose_cfg):
    run = to_run_config(
        compose_cfg(
            "dataset=[arith_mc,reverse_gen]",
            "apply_chat_template=true",
            "system_instruction=Be brief.",
            "gen_kwargs={max_gen_toks:8,until:[x]}",
            "dataset.reverse_gen.gen_kwargs={max_gen_toks:3}",
            "dataset.reverse_gen.apply_chat_template=false",
            "dataset.arith_mc.samples=[0,2]",
        )
    )
    arith = settings_for(run, run.dataset["arith_mc"])
    rev = settings_for(run, run.dataset["reverse_gen"])
    assert arith.apply_chat_template is True and arith.fewshot_as_multiturn is True
    assert arith.system_instruction == rev.system_instruction == "Be brief."
    assert arith.gen_kwargs == {"max_gen_toks": 8, "until": ["x"]} and arith.samples == (0, 2)
    assert rev.apply_chat_template is False and rev.fewshot_as_multiturn is False
    assert rev.gen_kwargs == {"max_gen_toks": 3, "until": ["x"]}  # merged, its own keys win
    assert rev.samples is None
    assert EvalSettings().changed() == {}
    assert arith.lm_eval_kwargs(["arith_mc"])["samples"] == {"arith_mc": [0, 2]}


def test_gen_kwargs_as_lm_eval_parses_them():
    as_string = parse_gen_kwargs('max_gen_toks=5,until=["\\n", "."],do_sample=false')
    assert as_string == {"max_gen_toks": 5, "until": ["\n", "."], "do_sample": False}
    assert parse_gen_kwargs({"max_gen_toks": 5}) == {"max_gen_toks": 5}
    assert parse_gen_kwargs('{"temperature": 0.5}') == {"temperature": 0.5}
    assert parse_gen_kwargs("") is None and parse_gen_kwargs(None) is None
    with pytest.raises(ValueError):
        parse_gen_kwargs("max_gen_toks")
    with pytest.raises(ValueError):
        parse_gen_kwargs(3)


CHANGES = {
    "apply_chat_template": "apply_chat_template=true",
    "fewshot_as_multiturn": "dataset.reverse_gen.fewshot_as_multiturn=false",
    "system_instruction": "system_instruction=Answer.",
    "gen_kwargs": "gen_kwargs={max_gen_toks:3}",
    "dataset gen_kwargs": "dataset.reverse_gen.gen_kwargs={until:[z]}",
    "predict_only": "predict_only=true",
    "samples": "dataset.reverse_gen.samples=[1,2]",
    "metadata": "dataset.reverse_gen.metadata={max_seq_lengths:[64]}",
}


@pytest.fixture(scope="module")
def keyed():
    """The fingerprint of reverse_gen with no setting, and with each one of CHANGES."""
    from hydra import compose, initialize_config_dir

    from harness.config.store import register_configs
    from harness.evaluation.fingerprint import dataset_key, fingerprint
    from harness.evaluation.tasks import prepare_datasets
    from harness.paths import CONF_DIR
    from harness.planning.preflight import checked_plan

    register_configs()

    def key(*overrides: str) -> dict:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose("config", overrides=["dataset=[reverse_gen]", *overrides])
        run = to_run_config(cfg)
        plan = checked_plan(run)
        key = dataset_key(run, plan, prepare_datasets(run)["reverse_gen"])
        return {"key": key, "fingerprint": fingerprint(key)}

    return {"none": key(), **{name: key(word) for name, word in CHANGES.items()}}


def test_no_setting_keys_a_result_as_before(keyed):
    assert "evaluation" not in keyed["none"]["key"]  # stores written before still match


@pytest.mark.parametrize("name", list(CHANGES))
def test_each_setting_is_in_the_key(keyed, name):
    if name == "fewshot_as_multiturn":  # false is already the default without a chat template
        assert keyed[name]["fingerprint"] == keyed["none"]["fingerprint"]
        return
    assert keyed[name]["fingerprint"] != keyed["none"]["fingerprint"]
    assert keyed[name]["key"]["evaluation"]
    others = [keyed[n]["fingerprint"] for n in CHANGES if n not in (name, "fewshot_as_multiturn")]
    assert keyed[name]["fingerprint"] not in others


@pytest.mark.slow
def test_a_code_execution_task_runs_once_confirmed(tmp_path):
    """succ_exec (unsafe_code: true) is refused without confirm_run_unsafe_code (the bad-input
    matrix) and runs with it: its answers are executed as Python and pass."""
    import json

    from tests.conftest import run_harness

    args = ["dataset=[succ_exec]", "dataset.succ_exec.limit=10", "tracking=none"]
    refused = run_harness([*args, f"output_dir={tmp_path / 'no'}"], tmp_path)
    assert refused.returncode == 2 and "confirm_run_unsafe_code=true" in refused.stderr
    proc = run_harness(
        [*args, "confirm_run_unsafe_code=true", f"output_dir={tmp_path / 'yes'}"], tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads((tmp_path / "yes" / "summary.json").read_text())
    assert summary["datasets"]["succ_exec"]["metrics"]["pass_at_1"] >= 0.9
