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
    assert accepted("endpoint") is None  # a server's own parameters: passed as they are


def test_a_misspelt_key_is_named_with_the_close_one_and_the_fix():
    (problem,) = gen_kwargs_key_problems("hf", "", {"max_gen_tok": 5, "temperature": 0})
    assert "gen_kwargs key 'max_gen_tok'" in problem
    assert "Did you mean 'max_gen_toks'" in problem and "Fix:" in problem
    (problem,) = gen_kwargs_key_problems("vllm", "dataset.g.", {"num_beams": 2})
    assert problem.startswith("dataset.g.gen_kwargs key 'num_beams'")
    assert gen_kwargs_key_problems("vllm", "", {"max_tokens": 5, "stop": ["\n"]}) == []
    assert gen_kwargs_key_problems("endpoint", "", {"anything": 1}) == []
