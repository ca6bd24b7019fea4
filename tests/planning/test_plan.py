"""The planner: published figures, hand-worked cases, and every model x strategy x tier."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from functools import cache
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from harness.config.schema import EngineKind, Quantization, RunConfig, to_run_config
from harness.paths import CONF_DIR
from harness.planning.auto import plan_run
from harness.planning.memory import GB, GIB, kv_bytes_per_token
from harness.planning.model_facts import resolve_model
from harness.planning.plan import make_plan
from tests.conftest import FIXTURES, fake_hub_cache, offline_env

MODELS = sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml") if p.stem != "hf")
"""The registry: every model option with its figures in YAML (``hf`` reads a checkpoint's)."""
STRATEGIES = sorted(p.stem for p in (CONF_DIR / "strategy").glob("*.yaml"))
TIERS = sorted(p.stem for p in (CONF_DIR / "tier").glob("*.yaml"))


@cache
def composed(**choices: str) -> RunConfig:
    overrides = [f"{k}={v}" for k, v in choices.items()]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return to_run_config(compose(config_name="config", overrides=overrides))


def run_config(model: str, strategy: str, tier: str) -> RunConfig:
    """model x strategy x tier, each composed by Hydra from its own option file."""
    base = composed()
    return replace(
        base,
        model=composed(model=model).model,
        strategy=composed(strategy=strategy).strategy,
        tier=composed(tier=tier).tier,
    )


# --- published figures -------------------------------------------------------------------------
# Weights at 2 bytes/param against the bf16/fp16 checkpoint sizes on the Hugging Face hub:
# meta-llama/Llama-2-70b-hf 137.98 GB (model card: "70B", 15 safetensors shards), tiiuae/falcon-40b
# 83.67 GB (pytorch_model.bin.index.json total_size 83,671,941,120), meta-llama/Llama-3.1-8B
# 16.06 GB, mistralai/Mixtral-8x7B-v0.1 93.4 GB, Qwen/Qwen3-8B 16.38 GB.
PUBLISHED_WEIGHTS_GB = {
    "llama2_70b": 138.0,
    "falcon_40b": 83.7,
    "llama3_1_8b": 16.06,
    "mixtral_8x7b": 93.4,
    "qwen3_8b": 16.38,
}


@pytest.mark.parametrize("model", sorted(PUBLISHED_WEIGHTS_GB))
def test_weights_match_published_checkpoint_sizes(model):
    plan = make_plan(run_config(model, "tp8", "large"), composed(strategy="tp8").strategy,
                     composed(tier="large").tier)  # fmt: skip
    assert plan.memory.weights_total_gb == pytest.approx(PUBLISHED_WEIGHTS_GB[model], rel=0.01)


def test_kv_cache_per_token_matches_published_figures():
    # KV bytes/token = 2 (K,V) x layers x kv_heads x head_dim x 2 bytes (bf16):
    # Llama-2-70B: 2*80*8*128*2 = 327,680 B ("320 KB per token", GQA with 8 KV heads);
    # Llama-3.1-8B: 2*32*8*128*2 = 131,072 B ("128 KiB per token"); Falcon-40B 2*60*8*64*2.
    one = composed(strategy="vllm").strategy
    assert kv_bytes_per_token(composed(model="llama2_70b").model, one) == 327_680
    assert kv_bytes_per_token(composed(model="llama3_1_8b").model, one) == 131_072
    assert kv_bytes_per_token(composed(model="falcon_40b").model, one) == 122_880
    # tp8 splits Llama-2-70B's 8 KV heads one per GPU; pp2 halves the layers of each stage.
    tp8 = composed(strategy="tp8").strategy
    assert kv_bytes_per_token(composed(model="llama2_70b").model, tp8) == 327_680 // 8
    tp4pp2 = composed(strategy="tp4_pp2").strategy
    assert kv_bytes_per_token(composed(model="llama2_70b").model, tp4pp2) == 327_680 // 8
    # Falcon-180B has 8 KV heads: at tp8 each GPU holds one; Gemma-2-9B's head_dim is 256.
    assert kv_bytes_per_token(composed(model="gemma2_9b").model, one) == 2 * 42 * 8 * 256 * 4


def test_memory_adds_up():
    # Llama-2-70B on tp4 (medium: 4 H100s, 79.19 GiB usable of the datasheet's 80, at 0.9):
    # 137.95e9 B / 4 = 32.12 GiB weights, KV 4096 tokens x 81,920 B = 0.3125 GiB, plus vLLM's
    # terms (activation, NCCL at tp 4, CUDA graphs in the budget of vLLM >= 0.21) of 71.27 GiB.
    plan = plan_run(run_config("llama2_70b", "tp4", "medium"))
    m = plan.memory
    assert m.weights_per_gpu == pytest.approx(68_976_648_192 * 2 / 4 / GIB, abs=1e-3)
    assert m.kv_cache == pytest.approx(4096 * 81_920 / GIB, abs=1e-3)
    assert m.graphs_in_budget and m.non_torch > 2.0 and m.activation > 0 and m.cuda_graph > 0
    assert m.overhead == pytest.approx(m.activation + m.non_torch + m.cuda_graph, abs=2e-3)
    assert m.needed == pytest.approx(m.weights_per_gpu + m.kv_cache + m.overhead, abs=2e-3)
    assert m.budget == pytest.approx(79.19 * 0.9, abs=1e-3)
    assert plan.fits and plan.gpus_needed == 4 and plan.executor_backend == "mp"
    assert m.kv_pool == pytest.approx(m.budget - m.weights_per_gpu - m.overhead, abs=2e-3)
    assert m.kv_capacity_tokens == pytest.approx(m.kv_pool * GIB / 81_920, abs=16 + 30)
    assert m.kv_capacity_tokens % 16 == 0  # vLLM's blocks of 16 tokens
    assert m.weights_total_gb == pytest.approx(68_976_648_192 * 2 / GB, abs=1e-3)


# --- hand-worked outcomes -----------------------------------------------------------------------
CASES = [
    # (model, strategy, tier, fits, substring of a problem or of the explanation)
    # tiny_char on the CPU: 3.5 MB of weights against 24 GiB x 0.8 of host memory.
    ("tiny_char", "single", "local", True, ""),
    # Llama-2-70B bf16 on one 80 GiB GPU: 128.5 GiB of weights alone; int8 halves it to 64.2.
    ("llama2_70b", "single", "small", False, "smallest deployment that fits tier 'small' is int8"),
    # tp4 on medium: 32.1 GiB + 0.3 + 2 per GPU (worked above).
    ("llama2_70b", "tp4", "medium", True, ""),
    # tp8 on medium: 8 GPUs asked, tier has 4 per node, and tp never spans nodes.
    ("llama2_70b", "tp8", "medium", False, "tensor parallel size (8) exceeds the 4 GPUs per node"),
    # Falcon-40B: 128 heads / 8 KV heads; tp4 -> 19.5 GiB/GPU.
    ("falcon_40b", "tp4", "medium", True, ""),
    # Gemma-2-9B has 16 heads and 8 KV heads: tp8 divides both (2 heads, 1 KV head per GPU).
    ("gemma2_9b", "tp8", "large", True, ""),
    # Qwen3-30B-A3B has 4 KV heads: tp8 replicates them (8 % 4 == 0), which is allowed.
    ("qwen3_30b_a3b", "tp8", "large", True, ""),
    # tiny_char has 2 heads: tp4 does not divide them.
    ("tiny_char", "tp4", "medium", False, "attention heads (2) must be divisible by tensor"),
    # fp8 needs Hopper/Ada; tier small is A100.
    ("llama3_1_8b", "fp8", "small", False, "needs fp8 tensor cores"),
    # Same model on H100s: 8.03e9 B = 7.48 GiB + KV 131072 x 131072 B = 16 GiB + 2 -> 25.5: fits.
    ("llama3_1_8b", "fp8", "medium", True, ""),
    # Llama-3.1-70B int8 on one A100: 67.7 GiB weights (embeddings and LM head stay 16-bit)
    # + 40 GiB KV (128k tokens) + vLLM's terms > 72; 5248 tokens fit beside weights and terms.
    ("llama3_1_70b", "int8", "small", False, "strategy.max_model_len=5248 or less would fit"),
    # A GPU strategy on the CPU tier.
    ("llama3_1_8b", "tp2", "local", False, "tier 'local' is this machine and it has no GPU"),
    # Falcon-180B bf16 on xlarge tp4_pp2: 359 GB / 8 = 41.8 GiB per GPU, 2 nodes, Ray.
    ("falcon_180b", "tp4_pp2", "xlarge", True, ""),
    # ...and on large (one node): 8 GPUs fit, so tp4_pp2 on one node is fine too.
    ("falcon_180b", "tp4_pp2", "large", True, ""),
    # dp: two replicas of one GPU each on a one-GPU tier.
    ("llama3_1_8b", "dp", "small", False, "needs 2 GPUs (tp x pp x dp)"),
    # strategy=auto on large: 70B bf16 needs 131.5 GiB on one GPU, 65.7+... on tp2 > 72 -> tp4.
    ("llama3_1_70b", "auto", "large", True, "strategy=auto picked tp4"),
    # auto with GPUs short: Falcon-180B on medium (4 GPUs): bf16 tp4 = 83.6 GiB > 72 -> fp8 tp4.
    ("falcon_180b", "auto", "medium", True, "strategy=auto picked tp4_fp8"),
    # tier=auto prefers a bigger tier to quantizing: Falcon-180B bf16 tp8 on large.
    ("falcon_180b", "auto", "auto", True, "tier=auto picked 'large'"),
    # tier=auto with a fixed strategy: Llama-3.1-8B tp2 first fits medium.
    ("llama3_1_8b", "tp2", "auto", True, "tier=auto picked 'medium'"),
    # int4 needs an AWQ/GPTQ checkpoint.
    ("mixtral_8x7b", "tp4", "medium", True, ""),
    # int8 is a GPU strategy: refused on the CPU tier, with the CPU deployment as the fix.
    # (vLLM strategies plan on the CPU where the tier has no GPU; quantization needs one)
    ("tiny_char", "int8", "local", False, "int8 needs a GPU, and this deployment runs on the CPU"),
    ("tiny_char", "int8", "local", False, "Fix: strategy.quantization=none"),
]


@pytest.mark.parametrize("model,strategy,tier,fits,needle", CASES)
def test_hand_worked_cases(model, strategy, tier, fits, needle):
    plan = plan_run(run_config(model, strategy, tier))
    text = "\n".join([*plan.problems, plan.explanation])
    assert plan.fits is fits, text
    assert needle in text, text


def test_pipeline_stages_go_one_per_node_when_the_tier_has_the_nodes():
    # tp4_pp2 on xlarge (2 nodes x 8): one stage of 4 GPUs on each node, over Ray.
    spread = plan_run(run_config("falcon_180b", "tp4_pp2", "xlarge"))
    assert (spread.gpus_needed, spread.nodes_needed, spread.executor_backend) == (8, 2, "ray")
    # The same on large (one node of 8): both stages share the node.
    packed = plan_run(run_config("falcon_180b", "tp4_pp2", "large"))
    assert (packed.gpus_needed, packed.nodes_needed) == (8, 1)
    # tp8 on xlarge stays on one node: tensor parallel never spans nodes.
    tp8 = plan_run(run_config("falcon_180b", "tp8", "xlarge"))
    assert (tp8.gpus_needed, tp8.nodes_needed) == (8, 1)


def test_cpu_replicas_share_the_cores_and_the_host_memory(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)  # the threads the cores give
    run = run_config("tiny_char", "dp", "local")
    one = plan_run(replace(run, strategy=replace(run.strategy, data_parallel_size=1)))
    four = replace(run.strategy, data_parallel_size=4)
    tier = replace(run.tier, cpus_per_task=8)
    plan = plan_run(replace(run, strategy=four, tier=tier))
    assert plan.threads_per_rank == 8 // 4 - 1  # one vLLM rank per replica leaves a core
    assert plan.memory.needed == pytest.approx(4 * one.memory.needed, abs=0.01)
    hf = plan_run(replace(run, strategy=replace(four, engine=EngineKind.hf), tier=tier))
    assert hf.threads_per_rank == 2


@pytest.mark.parametrize(("engine", "omp", "threads"), [
    (EngineKind.hf, None, 8), (EngineKind.hf, "3", 3), (EngineKind.hf, "3,2", 3),
    (EngineKind.hf, "16", 8), (EngineKind.hf, "x", 8), (EngineKind.vllm, "2", 2),
])  # fmt: skip
def test_a_cpu_plan_takes_no_more_threads_than_omp_num_threads_says(monkeypatch, engine, omp,
                                                                    threads):  # fmt: skip
    if omp is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", omp)
    run = run_config("tiny_char", "single", "local")
    strategy = replace(run.strategy, engine=engine)
    plan = plan_run(replace(run, strategy=strategy, tier=replace(run.tier, cpus_per_task=8)))
    assert plan.threads_per_rank == threads
    said = [n for n in plan.notes if "OMP_NUM_THREADS" in n]
    if threads < (8 if engine == EngineKind.hf else 7):
        assert said == [
            f"OMP_NUM_THREADS={threads} is set: {threads} thread(s) per rank, not the "
            f"{8 if engine == EngineKind.hf else 7} its 8 CPU(s) would give. Unset it (or "
            "raise it) to use them."
        ], plan.notes
    else:
        assert said == [], plan.notes
    on_gpus = plan_run(run_config("llama3_1_8b", "vllm", "small"))
    assert on_gpus.threads_per_rank == 0  # and no thread note: only what its memory rests on
    assert [n for n in on_gpus.notes if "calibrated on vLLM 0.19.0" not in n] == []


def test_int4_needs_a_prequantized_checkpoint():
    run = run_config("llama3_1_8b", "vllm", "small")
    run = replace(run, strategy=replace(run.strategy, quantization=Quantization.int4))
    plan = plan_run(run)
    assert any("AWQ or GPTQ" in p for p in plan.problems)


def test_trust_remote_code_is_off_unless_the_model_says_so():
    plans = [plan_run(run_config(m, "tp8", "large")) for m in MODELS]
    assert all(not any("trust_remote_code" in n for n in p.notes) for p in plans)
    run = run_config("falcon_40b", "tp4", "medium")
    run = replace(run, model=replace(run.model, trust_remote_code=True))
    assert any("trust_remote_code is ON" in n for n in plan_run(run).notes)


@pytest.mark.parametrize("model", MODELS)
def test_every_combination_plans_or_explains(model):
    for strategy in STRATEGIES:
        for tier in TIERS:
            plan = plan_run(run_config(model, strategy, tier))
            assert plan.fits == (not plan.problems)
            assert plan.fits <= plan.memory.fits
            for problem in plan.problems:
                assert "Fix:" in problem or "does not fit" in problem, problem
            if plan.fits and plan.device == "cuda":
                assert plan.gpus_needed <= plan.gpus_available
                assert plan.executor_backend in ("none", "mp", "ray")


# --- plan-only mode -----------------------------------------------------------------------------
PROBE = """
import runpy, sys, time
start = time.perf_counter()
sys.argv = ["harness", *sys.argv[1:]]
try:
    runpy.run_module("harness", run_name="__main__")
    code = 0
except SystemExit as e:
    code = e.code or 0
names = ("torch", "lm_eval", "vllm", "ray", "mlflow", "transformers")
heavy = [m for m in names if m in sys.modules]
print("PROBE", code, ",".join(heavy) or "-", round(time.perf_counter() - start, 3))
"""


def probe(tmp_path, *args: str) -> tuple[int, list[str], str]:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, *args, f"hydra.run.dir={tmp_path}"],
        cwd=tmp_path, env=offline_env(tmp_path), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("PROBE")][-1].split()
    heavy = [] if line[2] == "-" else line[2].split(",")
    return int(line[1]), heavy, proc.stdout + proc.stderr


def test_plan_only_fits_imports_nothing_heavy(tmp_path):
    code, heavy, out = probe(tmp_path, "model=falcon_40b", "strategy=tp4", "tier=medium",
                             "plan_only=true")  # fmt: skip
    assert code == 0, out
    assert heavy == [], heavy
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert plan["fits"] is True and plan["tensor_parallel_size"] == 4
    assert "FITS" in out and "Traceback" not in out


def test_plan_only_not_fitting_exits_nonzero_with_reasons(tmp_path):
    code, heavy, out = probe(tmp_path, "model=llama2_70b", "strategy=single", "tier=small",
                             "plan_only=true")  # fmt: skip
    assert code == 1, out
    assert heavy == []
    assert "DOES NOT FIT" in out and "strategy=int8" in out
    assert json.loads((tmp_path / "plan.json").read_text())["fits"] is False


@pytest.mark.slow
def test_real_run_refuses_a_plan_that_cannot_fit(tmp_path):
    from tests.conftest import run_harness

    proc = run_harness(["model=llama2_70b", "strategy=tp2", "tier=small"], tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "REFUSED (bad input)" in proc.stdout  # its weights are not here either: bad input
    assert "tensor parallel size (2) exceeds the 1 GPUs" in proc.stderr
    assert "NVML sees 0" in proc.stderr
    assert "Traceback" not in proc.stderr and "loading llama2_70b" not in proc.stdout


def usage_command(path) -> list[str]:
    """The overrides of the `python -m harness ...` comment that starts a config file."""
    for line in path.read_text().splitlines():
        if line.startswith("# python -m harness"):
            words = line.removeprefix("# python -m harness").split()
            return [w for w in words if w != "plan_only=true" and not w.startswith("tracking.")]
    raise AssertionError(f"{path} has no usage comment")


# Launcher files show a sweep (`-m a,b`), which is not one run: tests/sweep plans and runs them.
SINGLE_RUN_FILES = sorted(p for p in CONF_DIR.rglob("*.yaml") if p.parent.name != "launcher")


@pytest.mark.parametrize("path", SINGLE_RUN_FILES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_usage_comment_plans_a_fitting_deployment(path, tmp_path, monkeypatch):
    # model=hf's example names Qwen/Qwen3-8B: a hub cache holding its real config.json stands in.
    config = json.loads((FIXTURES / "hf_configs/qwen3_8b.json").read_text())
    fake_hub_cache(tmp_path, "Qwen/Qwen3-8B", config, num_params=8_190_735_360)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    overrides = usage_command(path)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        run = to_run_config(compose(config_name="config", overrides=overrides))
    run.model, _ = resolve_model(run.model, offline=True)
    plan = plan_run(run)
    assert plan.fits, (overrides, plan.problems)


def test_console_script_is_installed(tmp_path):
    script = Path(sys.executable).parent / "harness"
    assert script.is_file(), "pip install -e . installs the `harness` console script"
    proc = subprocess.run(
        [str(script), "model=falcon_40b", "strategy=tp4", "tier=medium", "plan_only=true",
         f"hydra.run.dir={tmp_path}"],
        cwd=tmp_path, env=offline_env(tmp_path), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "falcon_40b | strategy tp4 | tier medium | FITS" in proc.stdout
