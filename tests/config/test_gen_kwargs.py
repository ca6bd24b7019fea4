"""``gen_kwargs`` keys are checked against what the engine's generation takes (issue 35): read
from the installed transformers and vLLM sources, nothing imported."""

from __future__ import annotations

from harness.config.gen_kwargs import accepted, gen_kwargs_key_problems


def test_the_keys_of_each_engine_come_from_its_installed_sources():
    hf, vllm = accepted("hf"), accepted("vllm")
    assert hf is not None and vllm is not None
    assert {"max_gen_toks", "until", "do_sample", "top_p", "num_beams"} <= hf
    assert {"max_gen_toks", "until", "top_p", "seed", "presence_penalty"} <= vllm
    assert "num_beams" not in vllm and "presence_penalty" not in hf
    assert not any(key.startswith("_") for key in hf | vllm)
    assert accepted("other") is None


def test_a_misspelt_key_is_named_with_the_close_one_and_the_fix():
    (problem,) = gen_kwargs_key_problems("hf", "", {"max_gen_tok": 5, "temperature": 0})
    assert "gen_kwargs key 'max_gen_tok'" in problem
    assert "Did you mean 'max_gen_toks'" in problem and "Fix:" in problem
    (problem,) = gen_kwargs_key_problems("vllm", "dataset.g.", {"num_beams": 2})
    assert problem.startswith("dataset.g.gen_kwargs key 'num_beams'")
    assert gen_kwargs_key_problems("vllm", "", {"max_tokens": 5, "stop": ["\n"]}) == []


def test_a_served_models_keys_are_the_api_models_and_the_openai_apis(compose_cfg):
    """``strategy=endpoint``: lm-eval's API model sends every key it does not read into the
    request body, and an OpenAI-compatible server ignores a key it does not know (vLLM's logs it
    on its own side): a misspelt key would change nothing and say nothing (issue 35)."""
    from harness.config.evaluation import evaluation_problems
    from harness.config.schema import to_run_config

    completions, chat = accepted("endpoint"), accepted("endpoint_chat")
    assert completions is not None and chat is not None
    assert {"max_gen_toks", "until", "do_sample", "top_p", "seed", "best_of"} <= completions
    assert "top_k" in completions  # the installed vLLM server's sampling extra
    assert {"max_completion_tokens", "reasoning_effort", "top_logprobs"} <= chat
    assert "max_completion_tokens" not in completions and "best_of" not in chat
    assert not {"model", "prompt", "messages", "stream", "echo"} & (completions | chat)
    # lm-eval's API model reads max_gen_toks and max_tokens, not this alias: the server would
    # generate its default length
    (problem,) = gen_kwargs_key_problems("endpoint", "", {"max_new_tokens": 5})
    assert "gen_kwargs key 'max_new_tokens'" in problem and "Did you mean" in problem
    assert "the server, which ignores a key it does not know" in problem and "Fix:" in problem
    assert gen_kwargs_key_problems("endpoint", "", {"max_tokens": 5, "top_p": 0.9}) == []

    served = ["strategy=endpoint", "strategy.base_url=http://127.0.0.1:8000/v1"]
    run = to_run_config(compose_cfg(*served, "gen_kwargs={max_gen_tok:5}"))
    (problem,) = evaluation_problems(run)
    assert "'max_gen_tok'" in problem and "Did you mean 'max_gen_toks'" in problem, problem
    chat_run = to_run_config(
        compose_cfg(*served, "strategy.api=chat", "gen_kwargs={max_completion_tokens:5}")
    )
    assert evaluation_problems(chat_run) == []
