"""The planner's per-GPU memory figure against the GPU: a random bf16 model with Llama-3.1-8B's
layer shape and vocabulary (4 of its 32 layers: 1.9B parameters) planned from its own checkpoint,
loaded by the HF engine and run.

The band stated: the weights figure is what torch holds after the load (within 2%), and NVML's
peak in this process while the model reads a batch lies between the weights figure and the
plan's ``needed`` (weights + KV cache for max_model_len + overhead). The HF engine allocates its
KV cache per batch, not up front as vLLM does, so ``needed`` is an upper bound for it.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from harness.config.schema import to_run_config
from harness.machine.nvml import MIB, import_nvml
from harness.planning.preflight import checked_plan
from tests.conftest import FIXTURES, TINY_MODEL
from tests.gpu import cuda

pytestmark = pytest.mark.gpu

GIB = 1024**3
LAYERS = 4


def _checkpoint(folder: Path) -> int:
    """A random bf16 model of Llama-3.1-8B's shape with ``LAYERS`` layers, saved to ``folder``
    with the bundled tokenizer (its 100 ids lie inside the real vocabulary); its parameters."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = json.loads((FIXTURES / "hf_configs" / "llama3_1_8b.json").read_text())
    tokens = json.loads((TINY_MODEL / "config.json").read_text())
    config |= {k: tokens[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id")}
    config["num_hidden_layers"] = LAYERS
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(
            AutoConfig.for_model(**config), dtype=torch.bfloat16
        )
    params = sum(p.numel() for p in model.parameters())
    model.save_pretrained(folder)
    del model
    torch.cuda.empty_cache()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(TINY_MODEL / name, folder / name)
    return params


def _used_gib(nvml) -> float:
    return nvml.nvmlDeviceGetMemoryInfo(nvml.nvmlDeviceGetHandleByIndex(0)).used / MIB / 1024


def test_planned_memory_holds_on_the_gpu(tmp_path, compose_cfg):
    cuda()
    import torch

    from harness.engines.inprocess.hf import HFEngine

    folder = tmp_path / "llama3_1_8b_4layers"
    params = _checkpoint(folder)
    run = to_run_config(
        compose_cfg("model=hf", f"model.pretrained={folder}", "strategy=single", "tracking=none")
    )
    plan = checked_plan(run)
    assert plan.fits and plan.device == "cuda", plan.problems
    memory = plan.memory
    assert plan.model_used.num_params == params  # counted from the safetensors headers
    assert memory.weights_per_gpu == pytest.approx(params * 2 / GIB, rel=1e-3)

    nvml, why = import_nvml()
    assert nvml is not None, why
    torch.cuda.synchronize()
    before = _used_gib(nvml)  # this process's CUDA context is already there
    allocated = torch.cuda.memory_allocated()
    engine = HFEngine(plan)
    try:
        held = (torch.cuda.memory_allocated() - allocated) / GIB
        assert held == pytest.approx(memory.weights_per_gpu, rel=0.02), (
            f"torch holds {held:.3f} GiB after the load, the plan says weights "
            f"{memory.weights_per_gpu:.3f}"
        )
        model = engine.lm.model
        batch = torch.randint(4, 100, (8, 256), device="cuda")  # ids of the tokenizer
        peak = 0.0
        with torch.no_grad():
            for _ in range(2):
                model(batch)
                torch.cuda.synchronize()
                peak = max(peak, _used_gib(nvml))
        del model
        own = peak - before
        print(
            f"planner: needed {memory.needed} GiB (weights {memory.weights_per_gpu} + KV "
            f"{memory.kv_cache} + overhead {memory.overhead}); NVML: {own:.2f} GiB over "
            f"{before:.2f} before the load; torch after the load {held:.3f} GiB"
        )
        assert memory.weights_per_gpu <= own <= memory.needed
    finally:
        engine.close()
    time.sleep(0.2)
    left = (torch.cuda.memory_allocated() - allocated) / GIB
    assert left < 0.05, f"{left:.2f} GiB still allocated after the engine closed"
    nvml.nvmlShutdown()
