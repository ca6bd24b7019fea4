"""The plan's memory figures beside what the engine really took at start-up: every run a
calibration point of the planner.

The engine reports what it took (``engine.startup_memory``, ``engines/vllm_support/startup.py``);
this module sets each figure beside the plan's own (``plan.memory``), like with like, and says
which differ by more than ``THRESHOLD_PCT``. The result is summary.json's ``memory_check``, the
``memory_checked`` event (a killed run's summary and replay read it back) and the parent run's
``memory/<figure>_{planned,measured,diff_pct}`` metrics in MLflow.

Like with like: on GPUs vLLM sizes its KV cache from the budget (``gpu_memory_utilization``)
less what it measured for weights, activations and graphs, so the plan's KV capacity (what its
weights and overhead leave of that budget) is the figure to hold against vLLM's tokens. On the
CPU harness asks every worker for a KV cache of its own size (``kv_cache_memory_bytes``, from the
plan), so the KV figures there check the plan's bytes per token against vLLM's own layout, and
the weights the plan's bytes per parameter; the CPU's flat overhead (Python, torch, lm-eval) is
not vLLM's and is not compared.
"""

from __future__ import annotations

from typing import Any

GIB = 1024**3
THRESHOLD_PCT = 5.0
"""A figure more than this far from the plan's (either way) is warned about."""
GIB_RESOLUTION = 0.001
"""The plan rounds its GiB figures to three decimals: a difference within that is rounding."""
LABELS = {
    "weights_gib": "weights",
    "kv_cache_gib": "KV cache",
    "kv_tokens": "KV cache tokens",
    "overhead_gib": "overhead (context, buffers, activations, graphs)",
    "activation_peak_gib": "activation peak",
    "cuda_graphs_gib": "CUDA graphs",
}
"""The figures compared, in order, and how a warning names them."""
PLANNED_KEYS = {
    "activation_peak_gib": ("activation", "activation_peak", "activations"),
    "cuda_graphs_gib": ("cuda_graphs", "cuda_graph", "cudagraphs"),
}
"""Where a plan that models these terms apart keeps them in ``plan.memory`` (first found)."""


def planned_figures(plan: dict[str, Any], report: dict[str, Any]) -> dict[str, float | None]:
    """The plan's figure for each of ``LABELS``, like with like for the plan's device (None
    where the plan states none)."""
    memory = plan.get("memory") or {}
    per_token = memory.get("kv_bytes_per_token") or 0
    figures: dict[str, float | None] = dict.fromkeys(LABELS)
    figures["weights_gib"] = memory.get("weights_per_gpu")
    if plan.get("device") == "cpu":
        asked = report.get("kv_cache_asked_gib")
        figures["kv_cache_gib"] = asked
        if asked is not None and per_token:
            figures["kv_tokens"] = int(asked * GIB // per_token)
        return figures
    capacity = memory.get("kv_capacity_tokens")
    figures["kv_tokens"] = capacity
    if capacity is not None and per_token:
        figures["kv_cache_gib"] = round(capacity * per_token / GIB, 6)
    figures["overhead_gib"] = memory.get("overhead")
    for name, keys in PLANNED_KEYS.items():
        figures[name] = next((memory[k] for k in keys if memory.get(k) is not None), None)
    return figures


def compare(name: str, planned: float | None, measured: float | None) -> dict[str, Any]:
    """One figure: planned, measured, the difference in % of the plan's, and its status (``ok``,
    ``off`` beyond the threshold, ``not reported`` or ``not planned``)."""
    row: dict[str, Any] = {"planned": planned, "measured": measured}
    if measured is None:
        return row | {"status": "not reported"}
    if planned is None:
        return row | {"status": "not planned"}
    if not planned:
        return row | {"status": "not comparable", "note": "the plan's figure is 0"}
    diff = (measured - planned) / planned * 100
    row["diff_pct"] = round(diff, 2)
    within = abs(diff) <= THRESHOLD_PCT
    if not within and name.endswith("_gib") and abs(measured - planned) <= GIB_RESOLUTION:
        row["note"] = f"within the plan's rounding ({GIB_RESOLUTION} GiB)"
        within = True
    return row | {"status": "ok" if within else "off"}


def memory_check(plan: dict[str, Any], engine: dict[str, Any]) -> dict[str, Any]:
    """summary.json's ``memory_check``: each figure planned and measured, and a warning for each
    one off by more than ``THRESHOLD_PCT``. Empty when the engine reports nothing of the kind
    (the HF engine, an endpoint, a run that loaded no model)."""
    report = engine.get("startup_memory")
    if not isinstance(report, dict):
        return {}
    planned = planned_figures(plan, report)
    kind = str(engine.get("kind") or "the engine")
    release = f"vLLM {engine.get('vllm')}" if kind == "vllm" and engine.get("vllm") else kind
    device = str(plan.get("device") or "")
    figures = {name: compare(name, planned[name], report.get(name)) for name in LABELS}
    for name, why in (report.get("not_reported") or {}).items():
        if name in figures and figures[name]["status"] == "not reported":
            figures[name]["note"] = str(why)
    warnings = [
        warning(n, row, release, device) for n, row in figures.items() if row["status"] == "off"
    ]
    return {
        "engine": release,
        "device": device,
        "threshold_pct": THRESHOLD_PCT,
        "figures": figures,
        "warnings": warnings,
    }


def shown(name: str, value: float) -> str:
    return f"{int(value):,} tokens" if name == "kv_tokens" else f"{value:.3f} GiB"


def warning(name: str, row: dict[str, Any], release: str, device: str) -> str:
    """ "plan said X, vLLM took Y (+Z%); ..." for one figure off."""
    where = " of host memory" if name.endswith("_gib") and device == "cpu" else ""
    return (
        f"memory check: {LABELS[name]}: plan said {shown(name, row['planned'])}{where}, "
        f"{release} took {shown(name, row['measured'])} "
        f"({row['diff_pct']:+.1f}%); the planner may be off for this vLLM release: re-check its "
        "figures against this run (summary.json memory_check; docs/planning.md, 'Checked on "
        "every run')"
    )


def memory_metrics(check: dict[str, Any]) -> dict[str, float]:
    """The parent run's metrics: ``memory/<figure>_planned``, ``_measured``, ``_diff_pct`` for
    every figure that has them."""
    metrics: dict[str, float] = {}
    for name, row in (check.get("figures") or {}).items():
        for part in ("planned", "measured", "diff_pct"):
            value = row.get(part)
            if isinstance(value, int | float) and not isinstance(value, bool):
                metrics[f"memory/{name}_{part}"] = float(value)
    return metrics
