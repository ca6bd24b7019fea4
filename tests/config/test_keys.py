"""No setting silently dropped: keys outside the schema are refused, whatever added them."""

from __future__ import annotations

import pytest

from harness.config.keys import argv_key_problems, composed_key_problems, key_problem


def test_keys_added_with_plus_are_found_in_the_composed_config(compose_cfg):
    cfg = compose_cfg("+strategy.batchsize=8", "+foo=bar", "+dataset.arith_mc.limt=3")
    problems = composed_key_problems(cfg)
    assert len(problems) == 3, problems
    assert any("strategy.batchsize" in p and "Did you mean 'batch_size'" in p for p in problems)
    assert any(p.startswith("foo:") for p in problems)
    assert any("dataset.arith_mc.limt" in p and "'limit'" in p for p in problems)


def test_a_schema_conforming_config_has_no_unknown_keys(compose_cfg):
    assert composed_key_problems(compose_cfg("model=falcon_40b", "strategy=tp4")) == []


def test_a_nested_unknown_key_is_reported_once(compose_cfg):
    problems = composed_key_problems(compose_cfg("+extra={a: 1, b: {c: 2}}"))
    assert len(problems) == 1 and problems[0].startswith("extra:")


@pytest.mark.parametrize(
    "arg,flagged",
    [
        ("+strategy.batchsize=8", True),
        ("++strategy.batch_size=8", False),
        ("~tier.partition", False),
        ("~tier.partitions", True),
        ("dataset.any_name.num_fewshot=2", False),
        ("tier.nodes.count=2", True),
        ("hydra.run.dir=/tmp/x", False),
        ("hydra/launcher=submitit_local", False),
        ("model=hf", False),
        ("--multirun", False),
    ],
)
def test_command_line_keys(arg, flagged):
    assert bool(argv_key_problems([arg])) is flagged


def test_message_names_value_rule_and_fix():
    text = key_problem("strategy.tensor_parallel", shown="+strategy.tensor_parallel=2")
    assert text is not None
    assert text.startswith("+strategy.tensor_parallel=2:")
    assert "Did you mean 'tensor_parallel_size'" in text and "Fix:" in text
