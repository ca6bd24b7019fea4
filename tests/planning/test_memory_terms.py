"""The planner's memory terms against vLLM's own start-up reports.

Source: vLLM 0.19.0 on H100 80GB (79.19 GiB as CUDA reports it), gpu_memory_utilization 0.95,
prefix caching off, `vllm serve` (max_num_batched_tokens 8192, max_num_seqs 1024): the raw logs
of llm-d-incubation/llm-d-planner, accuracy/results/v0.19.0/logs/<row's log> (`Model loading
took`, `Available KV cache memory`, `GPU KV cache size`). Issue 37's three rows calibrate; the
rows kept apart were not used to fit any term. benchmarks/RESULTS.md, "Planner calibration", has
the same table.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from harness.config.schema import (
    DType,
    EngineKind,
    ModelConfig,
    Quantization,
    StrategyConfig,
    TierConfig,
)
from harness.planning.gpu_catalogue import usable_gpu_gib
from harness.planning.memory import estimate_memory
from harness.planning.memory_terms import CALIBRATED_VLLM
from tests.planning.test_plan import run_config

SERVE = {"max_num_batched_tokens": 8192, "max_num_seqs": 1024}
H100 = TierConfig(name="h100", gpus_per_node=8, gpu_memory_gib=80, gpu_type="H100")

# Facts of the checkpoints the logs ran, from their config.json (the registry's where it has them).
QWEN25_7B = ModelConfig(
    name="qwen2_5_7b", pretrained="Qwen/Qwen2.5-7B-Instruct", num_params=7_615_616_512,
    num_layers=28, hidden_size=3584, num_attention_heads=28, num_kv_heads=4, head_dim=128,
    vocab_size=152064, context_window=32768, dtype=DType.bfloat16,
)  # fmt: skip

# (log, model, tp, pp, quantization, max_model_len, measured weights GiB, measured KV tokens)
CALIBRATION = [
    (
        "meta-llama-llama-3-1-8b--h100-80gb--tp1pp1dp1--16384.log",
        "llama3_1_8b",
        1,
        1,
        "none",
        16384,
        14.99,
        476_016,
    ),
    (
        "fp8dyn-llama-3-3-70b--h100-80gb--tp2pp1dp1--8192.log",
        "llama3_1_70b",
        2,
        1,
        "fp8",
        8192,
        33.88,
        244_304,
    ),
    (
        "fp8dyn-llama-3-3-70b--h100-80gb--tp4pp1dp1--8192.log",
        "llama3_1_70b",
        4,
        1,
        "fp8",
        8192,
        16.96,
        708_992,
    ),
]
KEPT_APART = [
    (
        "meta-llama-llama-3-1-8b---h100-80gb--tp2pp1dp1--8192.log",
        "llama3_1_8b",
        2,
        1,
        "none",
        8192,
        7.51,
        1_044_688,
    ),
    (
        "meta-llama-llama-3-1-8b---h100-80gb--tp4pp1dp1--8192.log",
        "llama3_1_8b",
        4,
        1,
        "none",
        8192,
        3.77,
        2_209_792,
    ),
    (
        "meta-llama-llama-3-1-8b---h100-80gb--tp1pp2dp1--8192.log",
        "llama3_1_8b",
        1,
        2,
        "none",
        8192,
        7.51,
        1_075_312,
    ),
    (
        "meta-llama-llama-3-1-8b---h100-80gb--tp1pp4dp1--8192.log",
        "llama3_1_8b",
        1,
        4,
        "none",
        8192,
        4.26,
        2_257_264,
    ),
    (
        "meta-llama-llama-3---h100-80gb--tp1pp1dp1--8192-qfp8.log",
        "llama3_1_8b",
        1,
        1,
        "fp8",
        8192,
        8.49,
        529_248,
    ),
    (
        "qwen-qwen3-8b--h100-80gb--tp1pp1dp1--8192.log",
        "qwen3_8b",
        1,
        1,
        "none",
        8192,
        15.27,
        418_688,
    ),
    (
        "qwen-qwen2-5-7b-instruct--h100-80gb--tp1pp1dp1--8192.log",
        QWEN25_7B,
        1,
        1,
        "none",
        8192,
        14.25,
        1_096_000,
    ),
    (
        "qwen-qwen2-5-7b-instruct--h100-80gb--tp2pp1dp1--8192.log",
        QWEN25_7B,
        2,
        1,
        "none",
        8192,
        7.12,
        2_390_592,
    ),
    (
        "qwen-qwen2-5-7b-instruct--h100-80gb--tp4pp1dp1--8192.log",
        QWEN25_7B,
        4,
        1,
        "none",
        8192,
        3.55,
        5_043_280,
    ),
]


def planned(model: str | ModelConfig, tp: int, pp: int, quant: str, max_len: int):
    facts = model if isinstance(model, ModelConfig) else run_config(model, "vllm", "large").model
    strategy = StrategyConfig(
        name="vllm", engine=EngineKind.vllm, tensor_parallel_size=tp, pipeline_parallel_size=pp,
        quantization=Quantization(quant), gpu_memory_utilization=0.95, max_model_len=max_len,
        engine_args=SERVE,
    )  # fmt: skip
    return estimate_memory(facts, strategy, H100, "cuda", max_len, vllm_version=CALIBRATED_VLLM)


def error(planned_value: float, measured: float) -> float:
    return planned_value / measured - 1


@pytest.mark.parametrize("row", CALIBRATION, ids=[r[0] for r in CALIBRATION])
def test_issue_rows_within_3_percent_and_one_gpu_within_1(row):
    _, model, tp, pp, quant, max_len, weights, tokens = row
    memory = planned(model, tp, pp, quant, max_len)
    bound = 0.01 if tp * pp == 1 else 0.03
    assert abs(error(memory.weights_per_gpu, weights)) < bound, memory
    assert abs(error(memory.kv_capacity_tokens, tokens)) < bound, memory


@pytest.mark.parametrize("row", KEPT_APART, ids=[r[0] for r in KEPT_APART])
def test_rows_kept_apart_within_3_percent(row):
    _, model, tp, pp, quant, max_len, weights, tokens = row
    memory = planned(model, tp, pp, quant, max_len)
    bound = 0.01 if tp * pp == 1 else 0.03
    assert abs(error(memory.weights_per_gpu, weights)) < bound, memory
    assert abs(error(memory.kv_capacity_tokens, tokens)) < bound, memory


def test_each_term_follows_the_plan():
    base = planned("llama3_1_70b", 2, 1, "fp8", 8192)
    tp4 = planned("llama3_1_70b", 4, 1, "fp8", 8192)
    one = planned("llama3_1_8b", 1, 1, "none", 8192)
    assert 2.0 < base.non_torch < tp4.non_torch and one.non_torch < 0.3  # NCCL at tp >= 2
    assert base.activation == tp4.activation  # the sampler's logits are gathered whole
    assert not base.graphs_in_budget and base.overhead == pytest.approx(
        base.activation + base.non_torch, abs=2e-3
    )
    # fp8 keeps the embeddings and LM head 16-bit: 2 x 128256 x 8192 more bytes than 1 B/param
    assert base.weights_total_gb == pytest.approx(70.5537 + 2 * 128256 * 8192 / 1e9, abs=1e-3)


def test_graphs_count_in_the_budget_since_0_21_and_never_when_eager():
    facts = run_config("llama3_1_8b", "vllm", "large").model
    strategy = StrategyConfig(name="vllm", engine=EngineKind.vllm, engine_args=SERVE)
    new = estimate_memory(facts, strategy, H100, "cuda", 8192, vllm_version="0.33.0")
    old = estimate_memory(facts, strategy, H100, "cuda", 8192, vllm_version="0.19.0")
    assert new.graphs_in_budget and new.cuda_graph > 0.5
    assert new.kv_pool == pytest.approx(old.kv_pool - new.cuda_graph, abs=2e-3)
    eager_strategy = replace(strategy, enforce_eager=True)
    eager = estimate_memory(facts, eager_strategy, H100, "cuda", 8192, vllm_version="0.33.0")
    assert eager.cuda_graph == 0 and eager.kv_pool == pytest.approx(old.kv_pool, abs=2e-3)
    older = estimate_memory(facts, strategy, H100, "cuda", 8192, vllm_version="0.16.0")
    assert older.activation == pytest.approx(old.activation * 5.64 / 2.23, abs=1e-3)


def test_usable_memory_of_the_catalogue_and_of_nvml():
    assert usable_gpu_gib(H100)[0] == 79.19  # the datasheet's 80
    nvml = TierConfig(name="local", gpu_memory_gib=81559 / 1024, gpu_type="H100", detected=True)
    assert usable_gpu_gib(nvml)[0] == 79.19  # NVML's figure of the same GPU
    other = TierConfig(name="x", gpu_memory_gib=93.0, gpu_type="H100", detected=True)
    assert usable_gpu_gib(other) == (93.0, None)  # a figure it does not know is taken as is
    assert usable_gpu_gib(TierConfig(name="a", gpu_memory_gib=80, gpu_type="A100"))[0] == 80


def test_hf_engine_keeps_its_own_terms():
    facts = run_config("llama3_1_8b", "single", "large").model
    strategy = StrategyConfig(name="single", engine=EngineKind.hf)
    memory = estimate_memory(facts, strategy, H100, "cuda", 8192)
    assert memory.kv_pool == 0 and memory.cuda_graph == 0 and memory.non_torch == 0.5
    assert memory.overhead == pytest.approx(2.0)


def test_the_release_planned_for_is_a_setting_and_a_bad_one_is_refused():
    """``strategy.vllm_version`` plans a composed run for that release (the issue's commands
    with ``strategy.vllm_version=0.19.0`` give the calibration rows); a release that is no
    version is refused with the fix, and the rest is still planned."""
    from harness.config.rules import size_problems
    from harness.planning.plan import make_plan

    run = run_config("llama3_1_70b", "vllm", "large")
    tier = replace(run.tier, gpus_per_node=2, gpu_memory_gib=79.19)
    strategy = replace(run.strategy, quantization=Quantization.fp8, tensor_parallel_size=2,
                       gpu_memory_utilization=0.95, max_model_len=8192)  # fmt: skip
    pinned = make_plan(run, strategy, tier)
    old = make_plan(run, replace(strategy, vllm_version="0.19.0"), tier)
    assert old.memory.kv_capacity_tokens > pinned.memory.kv_capacity_tokens  # graphs outside
    assert abs(error(old.memory.kv_capacity_tokens, 244_304)) < 0.03
    assert any("vLLM 0.19.0 (strategy.vllm_version)" in n for n in old.notes)
    (problem,) = size_problems(replace(strategy, vllm_version="latest"))
    assert "strategy.vllm_version=latest" in problem and "Fix:" in problem
