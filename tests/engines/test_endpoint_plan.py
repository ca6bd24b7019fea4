"""``strategy=endpoint`` as planned and keyed, before any server is asked: no memory fit, every
dataset at once, the URL's credentials masked, the server in the result key; and the pieces of
the endpoint engine that need no server (retries shared by a merged call's datasets, an answer
without prompt log-probabilities caught)."""

from __future__ import annotations

import json

from harness.config.schema import to_run_config
from harness.engines.base import Answered, RequestMeter
from harness.planning.preflight import checked_plan
from harness.views import format_plan, format_plan_line

URL = "http://127.0.0.1:9/v1"


def endpoint_plan(compose_cfg, *overrides: str):
    given = ["strategy=endpoint", f"strategy.base_url={URL}", *overrides]
    return checked_plan(to_run_config(compose_cfg(*given)))


def test_an_endpoint_has_no_memory_fit_and_takes_every_dataset_at_once(compose_cfg):
    plan = endpoint_plan(compose_cfg, "dataset=[arith_mc,reverse_gen,story_ppl]")
    assert plan.fits and not plan.bad_input
    assert (plan.engine, plan.device, plan.replica_backend) == ("endpoint", "remote", "remote")
    assert plan.executor_backend == "none" and plan.gpus_needed == 0
    assert plan.memory.needed == 0 and plan.memory.weights_total_gb > 0
    assert plan.datasets_at_once == 3
    assert plan.max_model_len == 256  # the model group's context window
    assert any(f"served at {URL}" in note for note in plan.notes)
    assert "nothing loads here" in format_plan(plan)
    assert "served elsewhere" in format_plan_line(plan)


def test_credentials_in_the_url_are_masked_in_the_plan(compose_cfg):
    url = "http://alice:pw-0123456789@127.0.0.1:9/v1"
    plan = endpoint_plan(compose_cfg, f"strategy.base_url={url}", "dataset=[arith_mc]")
    text = json.dumps(plan.to_dict()) + format_plan(plan)
    assert "pw-0123456789" not in text and "http://***@127.0.0.1:9/v1" in text


def test_the_result_key_names_the_server(compose_cfg):
    from harness.evaluation.fingerprint import dataset_key
    from harness.evaluation.tasks import prepare_datasets

    run = to_run_config(compose_cfg("strategy=endpoint", f"strategy.base_url={URL}"))
    plan = checked_plan(run)
    prepared = prepare_datasets(run)
    name = next(iter(prepared))
    served = dataset_key(run, plan, prepared[name])["deployment"]["endpoint"]
    assert served == {
        "base_url": URL,
        "model_id": None,
        "api": "completions",
        "tokenized_requests": True,
    }


def test_a_merged_calls_retries_are_shared_by_its_slices():
    answered = Answered(list(range(10)), [1] * 10, [0] * 10, retries=7)
    parts = [answered.part(0, 3), answered.part(3, 4), answered.part(4, 10)]
    assert sum(p.retries for p in parts) == 7
    meter = RequestMeter()
    for part in parts:
        meter.record("loglikelihood", part)
    assert meter.retried == 7 and meter.requests == 10


def test_an_answer_without_the_prompts_logprobs_is_caught():
    from harness.engines.remote.lm import prompt_logprobs_problem

    echoed = {"choices": [{"index": 0, "logprobs": {"token_logprobs": [None, -1.0, -0.5]}}]}
    assert prompt_logprobs_problem(echoed, [[5, 6]]) is None
    generated_only = {"choices": [{"index": 0, "logprobs": {"token_logprobs": [-0.5]}}]}
    assert "1 token(s) of a prompt of 2" in str(prompt_logprobs_problem(generated_only, [[5, 6]]))
    assert "no token_logprobs" in str(prompt_logprobs_problem({"choices": [{"index": 0}]}, None))
