"""The engine is loaded once per run, however many datasets follow (counted, not assumed)."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.slow


def test_engine_built_once_for_three_datasets(compose_cfg, tmp_path, monkeypatch):
    from lm_eval.models.huggingface import HFLM
    from transformers import AutoModelForCausalLM

    from harness.runner import run

    inits: list[str] = []
    loads: list[str] = []
    original_init = HFLM.__init__
    original_load = AutoModelForCausalLM.from_pretrained.__func__

    def counting_init(self, *args, **kwargs):
        inits.append(str(kwargs.get("pretrained")))
        original_init(self, *args, **kwargs)

    def counting_load(cls, *args, **kwargs):
        loads.append(str(args[0] if args else kwargs.get("pretrained_model_name_or_path")))
        return original_load(cls, *args, **kwargs)

    monkeypatch.setattr(HFLM, "__init__", counting_init)
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", classmethod(counting_load))
    cfg = compose_cfg(
        "dataset=[arith_mc,compare_mc,successor_gen]",
        "dataset.arith_mc.limit=20",
        "dataset.compare_mc.limit=20",
        "dataset.successor_gen.limit=20",
        "tracking=none",
        f"output_dir={tmp_path / 'run'}",
        f"outputs_root={tmp_path / 'outputs'}",
    )
    assert run(cfg) == 0
    assert len(inits) == 1, inits
    assert len(loads) == 1, loads
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert [d["status"] for d in summary["datasets"].values()] == ["ok"] * 3
    assert all(d["requests"] > 0 for d in summary["datasets"].values())
