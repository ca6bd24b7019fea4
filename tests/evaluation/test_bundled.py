"""The bundled task data is what its generator makes, and the bundled model is what we claim."""

from __future__ import annotations

import importlib.util
import json

from harness.paths import PLUGINS_DIR
from tests.conftest import BUNDLED_TASKS, TINY_MODEL


def _load_generator():
    path = PLUGINS_DIR / "tasks" / "synth" / "generate_data.py"
    spec = importlib.util.spec_from_file_location("synth_generate_data", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_data_is_reproduced_by_the_generator(tmp_path):
    _load_generator().write_all(out_dir=tmp_path)
    committed = PLUGINS_DIR / "tasks" / "synth" / "data"
    for task in BUNDLED_TASKS:
        fresh = (tmp_path / f"{task}.jsonl").read_bytes()
        assert fresh == (committed / f"{task}.jsonl").read_bytes(), task


def test_tiny_model_shape_matches_its_config_entry(compose_cfg):
    from harness.config.schema import to_run_config

    model = to_run_config(compose_cfg()).model
    hf = json.loads((TINY_MODEL / "config.json").read_text())
    assert model.num_layers == hf["num_hidden_layers"]
    assert model.hidden_size == hf["hidden_size"]
    assert model.num_attention_heads == hf["num_attention_heads"]
    assert model.num_kv_heads == hf["num_key_value_heads"]
    assert model.head_dim == hf["head_dim"] == 64  # a head size vLLM's CPU attention supports
    assert model.vocab_size == hf["vocab_size"]
    assert model.context_window == hf["max_position_embeddings"]
    from safetensors import safe_open

    with safe_open(str(TINY_MODEL / "model.safetensors"), "np") as f:
        assert sum(f.get_tensor(k).size for k in f.keys()) == model.num_params  # noqa: SIM118
    size = sum(p.stat().st_size for p in TINY_MODEL.iterdir())
    assert size < 6_000_000, size
