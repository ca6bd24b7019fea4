"""``strategy=endpoint`` as planned and keyed, before any server is asked: no memory fit, every
dataset at once, the URL's credentials masked, the server in the result key; and the pieces of
the endpoint engine that need no server (each HTTP request's retries given to the requests it
carried, counted once per dataset through a merged call, a failed one too; an answer without
prompt log-probabilities caught)."""

from __future__ import annotations

import json
from types import SimpleNamespace

from harness.config.schema import to_run_config
from harness.engines.base import retries_of
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


def requests(*args: tuple[str, ...]) -> list[SimpleNamespace]:
    return [SimpleNamespace(args=a) for a in args]


def test_each_http_requests_retries_go_to_the_requests_it_carried():
    """lm-eval's cache keys tag each HTTP request; equal requests take them in order."""
    from harness.engines.remote.retries import mark_retries
    from harness.engines.remote.transport import RetryCount

    a, b, a2, c = requests(("a", " x"), ("b", " y"), ("a", " x"), ("c", " z"))
    count = RetryCount(
        retried=5,
        each=[2, 0, 3],
        tags=[[("b", " y"), ("a", " x")], [("a", " x")], [("c", " z")]],
    )
    mark_retries("loglikelihood", [a, b, a2, c], count)
    assert retries_of([a2]) == 0  # the second ("a", " x") went in the request never retried
    assert retries_of([a, b]) == 2  # one HTTP request carried both: counted once
    assert retries_of([c]) == 3
    assert retries_of([a, b, c]) == 0  # taken: counted once


def test_a_generations_retries_are_matched_by_its_context():
    from harness.engines.remote.retries import mark_retries
    from harness.engines.remote.transport import RetryCount

    short, long = requests(("2+2=", {"until": ["\n"]}), ("reverse: abc", {"until": ["\n"]}))
    count = RetryCount(
        retried=1, each=[1, 0], tags=[[("reverse: abc", {"until": ["\n"]})], [("2+2=", {})]]
    )
    mark_retries("generate_until", [short, long], count)
    assert (retries_of([short]), retries_of([long])) == (0, 1)


def test_a_merged_calls_retries_are_each_datasets_own():
    """Two datasets' slices merged into one engine call (one HTTP request carrying a prompt of
    each): each dataset counts the retries of its own requests' HTTP requests, the shared one in
    both, whether the call then succeeded or failed (the marks are made either way)."""
    from harness.engines.remote.retries import mark_retries
    from harness.engines.remote.transport import RetryCount

    first = requests(("q1", " a"), ("q2", " b"))
    second = requests(("q3", " c"))
    tags = [[("q1", " a"), ("q3", " c")], [("q2", " b")]]
    mark_retries("loglikelihood", first + second, RetryCount(retried=4, each=[1, 3], tags=tags))
    assert retries_of(first) == 4  # both of its HTTP requests
    assert retries_of(second) == 1  # the one it shared with the first dataset


def test_an_answer_without_the_prompts_logprobs_is_caught():
    from harness.engines.remote.lm import prompt_logprobs_problem

    echoed = {"choices": [{"index": 0, "logprobs": {"token_logprobs": [None, -1.0, -0.5]}}]}
    assert prompt_logprobs_problem(echoed, [[5, 6]]) is None
    generated_only = {"choices": [{"index": 0, "logprobs": {"token_logprobs": [-0.5]}}]}
    assert "1 token(s) of a prompt of 2" in str(prompt_logprobs_problem(generated_only, [[5, 6]]))
    assert "no token_logprobs" in str(prompt_logprobs_problem({"choices": [{"index": 0}]}, None))
