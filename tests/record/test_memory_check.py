"""The plan's memory beside what the engine took (issue 37): the comparison itself, fast.

The real vLLM runs that feed it are in ``tests/engines/test_memory_check_vllm.py`` and
``tests/engines/test_vllm.py``; here the plan and the engine's report are the dicts those runs
write (``plan.json``'s ``memory``, ``engine.startup_memory``).
"""

from __future__ import annotations

import pytest

from harness.record.memory_check import (
    GIB,
    THRESHOLD_PCT,
    compare,
    memory_check,
    memory_metrics,
)
from harness.record.summary import RunSummary, killed_summary

CPU_PLAN = {
    "device": "cpu",
    "memory": {
        "weights_per_gpu": 0.003,  # the bundled model: 865,920 parameters x 4 B, rounded
        "kv_bytes_per_token": 4096,
        "kv_cache": 0.001,
        "overhead": 1.0,
        "kv_capacity_tokens": 4_673_706,  # what host memory would hold: not vLLM's pool
    },
}
GPU_PLAN = {
    "device": "cuda",
    "memory": {
        "weights_per_gpu": 14.96,
        "kv_bytes_per_token": 131_072,
        "overhead": 2.0,
        "kv_capacity_tokens": 477_372,
    },
}


def cpu_report(kv_tokens: int = 65_536) -> dict:
    """What the bundled model's vLLM CPU engine reports: 256 MiB asked and reserved."""
    return {
        "kind": "vllm",
        "vllm": "0.32.0+cpu",
        "startup_memory": {
            "device": "cpu",
            "weights_gib": 865_920 * 4 / GIB,
            "kv_cache_gib": 0.25,
            "kv_cache_asked_gib": 0.25,
            "kv_tokens": kv_tokens,
        },
    }


@pytest.mark.parametrize(
    "measured,status",
    [(100.0, "ok"), (105.0, "ok"), (95.0, "ok"), (105.1, "off"), (94.9, "off"), (150.0, "off")],
)
def test_a_figure_is_off_beyond_five_percent_either_way(measured, status):
    row = compare("kv_tokens", 100.0, measured)
    assert THRESHOLD_PCT == 5.0
    assert row["status"] == status
    assert row["diff_pct"] == pytest.approx(measured - 100.0, abs=0.01)


def test_missing_figures_are_not_reported_or_not_planned_never_a_warning():
    assert compare("kv_tokens", 100.0, None)["status"] == "not reported"
    assert compare("activation_peak_gib", None, 1.2)["status"] == "not planned"
    assert compare("kv_tokens", 0, 10)["status"] == "not comparable"
    report = cpu_report()
    del report["startup_memory"]["kv_tokens"]
    report["startup_memory"]["not_reported"] = {"kv_tokens": "vLLM's cache_config holds none"}
    check = memory_check(CPU_PLAN, report)
    assert check["figures"]["kv_tokens"]["status"] == "not reported"
    assert "cache_config" in check["figures"]["kv_tokens"]["note"]
    assert check["warnings"] == []
    assert "memory/kv_tokens_measured" not in memory_metrics(check)


def test_an_engine_that_reports_nothing_gives_no_check():
    assert memory_check(CPU_PLAN, {"kind": "hf"}) == {}
    assert memory_check(CPU_PLAN, {}) == {}
    assert memory_metrics({}) == {}


def test_the_cpu_build_is_checked_like_with_like():
    """On the CPU the plan's KV pool is what harness asked each worker for, in the plan's bytes
    per token (not the host's capacity); the weights' three-decimal rounding is no warning."""
    check = memory_check(CPU_PLAN, cpu_report())
    figures = check["figures"]
    assert figures["kv_tokens"]["planned"] == 65_536  # 256 MiB / 4,096 B
    assert figures["kv_tokens"]["status"] == "ok"
    assert figures["kv_cache_gib"] == {
        "planned": 0.25, "measured": 0.25, "diff_pct": 0.0, "status": "ok",
    }  # fmt: skip
    assert figures["weights_gib"]["status"] == "ok"
    assert "rounding" in figures["weights_gib"]["note"]
    assert figures["overhead_gib"]["planned"] is None  # the CPU's overhead is not vLLM's
    assert check["warnings"] == []


def test_a_wrong_plan_is_warned_about_with_both_figures():
    check = memory_check(CPU_PLAN, cpu_report(kv_tokens=81_920))
    assert check["figures"]["kv_tokens"]["status"] == "off"
    assert check["figures"]["kv_tokens"]["diff_pct"] == 25.0
    [text] = check["warnings"]
    assert "plan said 65,536 tokens" in text
    assert "vLLM 0.32.0+cpu took 81,920 tokens (+25.0%)" in text
    assert "the planner may be off for this vLLM release" in text


def test_gpu_figures_are_the_plans_capacity_and_overhead():
    report = {
        "kind": "vllm",
        "vllm": "0.33.0",
        "startup_memory": {
            "device": "cuda",
            "weights_gib": 14.99,
            "kv_tokens": 476_016,
            "kv_cache_gib": 476_016 * 131_072 / GIB,
            "overhead_gib": 2.9,
            "activation_peak_gib": 1.1,
            "cuda_graphs_gib": 0.4,
        },
    }
    check = memory_check(GPU_PLAN, report)
    figures = check["figures"]
    assert figures["kv_tokens"]["planned"] == 477_372
    assert figures["kv_tokens"]["status"] == "ok"
    assert figures["weights_gib"]["status"] == "ok"
    assert figures["overhead_gib"]["status"] == "off"  # 2.0 planned, 2.9 taken: +45%
    assert figures["activation_peak_gib"]["status"] == "not planned"
    [text] = check["warnings"]
    assert "overhead" in text and "plan said 2.000 GiB" in text and "(+45.0%)" in text
    metrics = memory_metrics(check)
    assert metrics["memory/kv_tokens_planned"] == 477_372.0
    assert metrics["memory/kv_tokens_measured"] == 476_016.0
    assert metrics["memory/overhead_gib_diff_pct"] == 45.0
    assert metrics["memory/activation_peak_gib_measured"] == 1.1
    assert "memory/activation_peak_gib_planned" not in metrics


def test_a_plan_that_models_activations_apart_is_compared_term_by_term():
    plan = {**GPU_PLAN, "memory": {**GPU_PLAN["memory"], "activation_peak": 1.0}}
    report = {"kind": "vllm", "vllm": "0.33.0", "startup_memory": {"activation_peak_gib": 1.2}}
    row = memory_check(plan, report)["figures"]["activation_peak_gib"]
    assert (row["planned"], row["status"]) == (1.0, "off")


def test_the_summary_carries_the_check_and_a_killed_run_takes_it_from_its_events():
    check = memory_check(CPU_PLAN, cpu_report(kv_tokens=81_920))
    summary = RunSummary(model="m", strategy="vllm", memory_check=check)
    assert RunSummary.from_dict(summary.to_dict()).memory_check == check
    assert RunSummary.from_dict({"model": "m"}).memory_check == {}  # an older summary
    first = {"event": "memory_checked", "t": 1.0, "check": {"figures": {}}}
    rebuilt = {"event": "memory_checked", "t": 2.0, "check": check}
    killed = killed_summary([{"event": "planned", "t": 0.0}, first, rebuilt], CPU_PLAN)
    assert killed.memory_check == check  # the engine the run last built


class Plan:
    """What the runner's check reads of a plan: its engine and its figures."""

    def __init__(self, engine: str) -> None:
        self.engine = engine

    def to_dict(self) -> dict:
        return CPU_PLAN


class Engine:
    def __init__(self, facts: dict | Exception) -> None:
        self.facts, self.asked = facts, 0

    def describe(self) -> dict:
        self.asked += 1
        if isinstance(self.facts, Exception):
            raise self.facts
        return self.facts


def test_the_run_records_the_check_once_loaded_and_warns_of_each_figure_off(capsys):
    from harness.runner.memory import check_loaded_memory

    emitted: list = []

    def emit(event: str, **fields) -> None:
        emitted.append((event, fields))

    check = check_loaded_memory(Engine(cpu_report(81_920)), Plan("vllm"), emit)
    assert emitted == [("memory_checked", {"check": check})]
    [text] = check["warnings"]
    assert f"warning: {text}" in capsys.readouterr().err
    emitted.clear()
    assert check_loaded_memory(Engine(cpu_report()), Plan("vllm"), emit)["warnings"] == []
    assert capsys.readouterr().err == ""
    assert emitted[0][0] == "memory_checked"


def test_an_engine_that_cannot_say_never_stops_the_run(capsys):
    from harness.runner.memory import check_loaded_memory

    hf = Engine({"kind": "hf"})
    assert check_loaded_memory(hf, Plan("hf"), print) == {} and hf.asked == 0  # not asked
    assert check_loaded_memory(Engine(RuntimeError("gone")), Plan("vllm"), print) == {}
    assert check_loaded_memory(Engine({"kind": "vllm"}), Plan("vllm"), print) == {}
    assert capsys.readouterr().err == ""
