"""What a vLLM engine took at start-up, read from its objects (issue 37): the reading, fast.

The real engines are read in ``tests/engines/test_vllm.py`` (TP=2 on this CPU) and
``tests/engines/test_memory_check_vllm.py``; here the worker's own arithmetic on real torch
tensors, and a GPU worker's figures (no GPU here) as vLLM 0.32/0.33's ``Worker`` names them.
"""

from __future__ import annotations

import importlib
from types import SimpleNamespace

import pytest
import torch

from harness.engines.inprocess.vllm import worker_extension
from harness.engines.vllm_support import startup
from harness.engines.vllm_support.startup import (
    EXTENSION,
    GIB,
    StartupMemory,
    fold,
    startup_memory,
    worker_memory,
)


def test_the_extension_is_found_as_vllm_resolves_it_and_adds_one_method():
    module, name = EXTENSION.rsplit(".", 1)  # vLLM's resolve_obj_by_qualname
    assert getattr(importlib.import_module(module), name) is StartupMemory
    assert [a for a in dir(StartupMemory) if not a.startswith("__")] == [startup.RPC]


def test_the_extension_is_not_given_where_a_user_set_one_or_workers_run_on_ray():
    plan = SimpleNamespace(executor_backend="mp")
    assert worker_extension(plan, {}) == {"worker_extension_cls": EXTENSION}
    assert worker_extension(plan, {"worker_extension_cls": "mine.Ext"}) == {}
    assert worker_extension(SimpleNamespace(executor_backend="ray"), {}) == {}


def test_a_cpu_worker_counts_its_parameters_and_its_kv_tensors_once():
    model = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.LayerNorm(4))
    kv = torch.zeros(2, 16, 4)
    runner = SimpleNamespace(model=model, kv_caches=[kv, kv[0], [kv[1]]])  # views of one buffer
    got = worker_memory(SimpleNamespace(model_runner=runner, rank=0))
    assert got["weights"] == (8 * 4 + 4 + 4 + 4) * 4 and got["weights_source"] == "parameter bytes"
    assert got["kv_cache"] == kv.numel() * 4
    assert got["activation_peak"] is None and got["cuda_graphs"] is None


def test_weights_moved_out_of_the_parameters_are_not_reported():
    """vLLM's CPU build repacks a linear layer's weight for oneDNN and leaves it empty."""
    model = torch.nn.Sequential(torch.nn.Linear(8, 4))
    model[0].weight = torch.nn.Parameter(torch.empty(0))
    got = worker_memory(SimpleNamespace(model_runner=SimpleNamespace(model=model), rank=0))
    assert got["weights"] is None and got["weights_source"] is None


def test_a_gpu_workers_profile_is_taken_as_vllm_holds_it(monkeypatch):
    monkeypatch.setattr(startup, "_graphs_in_peak", lambda: True)
    worker = SimpleNamespace(
        rank=1,
        model_runner=SimpleNamespace(model_memory_usage=15 * GIB, kv_caches=[]),
        available_kv_cache_memory_bytes=58 * GIB,
        peak_activation_memory=2 * GIB,  # the graphs' estimate included, as vLLM sizes by it
        cudagraph_memory_estimate=GIB // 2,
        requested_memory=75 * GIB,
    )
    got = worker_memory(worker)
    assert got["weights"] == 15 * GIB and got["weights_source"] == "model_memory_usage"
    assert got["kv_cache"] == 58 * GIB
    assert (got["activation_peak"], got["cuda_graphs"]) == (3 * GIB // 2, GIB // 2)
    assert got["budget"] == 75 * GIB


def test_ranks_fold_per_gpu_or_summed_on_the_host():
    ranks = [
        {"weights": 2 * GIB, "kv_cache": 10 * GIB, "activation_peak": GIB, "budget": 16 * GIB},
        {"weights": 3 * GIB, "kv_cache": 9 * GIB, "activation_peak": GIB, "budget": 16 * GIB},
    ]
    gpu = fold(ranks, "cuda")
    assert (gpu["weights_gib"], gpu["kv_cache_gib"]) == (3.0, 9.0)  # the largest, the smallest
    assert gpu["overhead_gib"] == 16 - 3 - 9
    assert gpu["cuda_graphs_gib"] is None
    host = fold(ranks, "cpu")
    assert (host["weights_gib"], host["kv_cache_gib"]) == (5.0, 19.0)
    assert host["overhead_gib"] is None


class Frontend:
    """The ``LLM`` as the engine's process holds it after start-up: its cache config, and
    workers that answer ``collective_rpc`` (or do not)."""

    def __init__(self, answers: list | Exception, blocks: int = 512) -> None:
        cache = SimpleNamespace(
            num_gpu_blocks=blocks, block_size=128, kv_cache_size_tokens=None,
            kv_cache_max_concurrency=256.0, kv_cache_memory_bytes=256 * 1024**2,
        )  # fmt: skip
        self.llm_engine = SimpleNamespace(vllm_config=SimpleNamespace(cache_config=cache))
        self.answers = answers

    def collective_rpc(self, method: str, timeout: float | None = None) -> list:
        assert method == startup.RPC
        if isinstance(self.answers, Exception):
            raise self.answers
        return self.answers


def test_the_report_holds_the_frontends_tokens_and_the_ask_of_every_cpu_worker():
    asked = 256 * 1024**2
    ranks = [{"rank": r, "weights": None, "kv_cache": asked} for r in range(2)]
    report = startup_memory(Frontend(ranks), "cpu", asked)
    assert report["kv_tokens"] == 512 * 128  # blocks x block size
    assert report["kv_cache_asked_gib"] == report["kv_cache_gib"] == 0.5  # two workers' asks
    assert "oneDNN" in report["not_reported"]["weights_gib"]
    assert "cuda_graphs_gib" in report["not_reported"]


def test_workers_that_do_not_answer_leave_the_frontends_figures_and_say_why():
    report = startup_memory(Frontend(RuntimeError("no such method")), "cuda", None)
    assert report["kv_tokens"] == 65_536 and report["ranks"] == 0
    assert "no such method" in report["not_reported"]["weights_gib"]
    assert "weights_gib" not in report


@pytest.mark.parametrize("llm", [None, SimpleNamespace()])
def test_an_engine_without_vllms_objects_reports_nothing_measured(llm):
    report = startup_memory(llm, "cpu", None)
    assert "kv_tokens" in report["not_reported"] and "kv_tokens" not in report
