"""Choosing a deployment: ``strategy=auto``, ``tier=auto``, and the fix for one that does not fit.

The search order is the seed's: one GPU; tensor parallel within a node; tensor x pipeline across
nodes; and only when GPUs are short, the same again with quantized weights (fp8 where the GPUs
have it, else int8).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

from harness.config.rules import FP8_GPUS
from harness.config.schema import (
    Device,
    EngineKind,
    Quantization,
    RunConfig,
    StrategyConfig,
    TierConfig,
)
from harness.paths import CONF_DIR
from harness.planning.plan import AUTO_TIERS, Plan, make_plan


def load_tier(name: str) -> TierConfig:
    """A tier from ``conf/tier/<name>.yaml``, typed (no Hydra needed)."""
    from harness.config.store import load_option

    return load_option("tier", name, TierConfig)


def strategy_name(s: StrategyConfig) -> str:
    """The option name of a vLLM deployment: ``tp4``, ``tp4_pp2``, ``tp4_fp8``, ``int8``."""
    parts = []
    if s.tensor_parallel_size > 1:
        parts.append(f"tp{s.tensor_parallel_size}")
    if s.pipeline_parallel_size > 1:
        parts.append(f"pp{s.pipeline_parallel_size}")
    if s.quantization != Quantization.none:
        parts.append(s.quantization.value)
    return "_".join(parts) or "vllm"


def as_override(s: StrategyConfig) -> str:
    """Command-line words that select this deployment: a named option when one exists."""
    name = strategy_name(s)
    if (CONF_DIR / "strategy" / f"{name}.yaml").is_file():
        return f"strategy={name}"
    words = [f"strategy=vllm strategy.tensor_parallel_size={s.tensor_parallel_size}"]
    if s.pipeline_parallel_size > 1:
        words.append(f"strategy.pipeline_parallel_size={s.pipeline_parallel_size}")
    if s.quantization != Quantization.none:
        words.append(f"strategy.quantization={s.quantization.value}")
    return " ".join(words)


def candidates(
    base: StrategyConfig, tier: TierConfig, allow_quantized: bool = True
) -> Iterator[StrategyConfig]:
    """Deployments in the order auto tries them, smallest first."""
    if tier.gpus_per_node < 1:  # no GPUs: the lightweight engine on the CPU is all there is
        yield replace(
            base,
            name="single",
            engine=EngineKind.hf,
            device=Device.cpu,
            tensor_parallel_size=1,
            pipeline_parallel_size=1,
            data_parallel_size=1,
            quantization=Quantization.none,
            auto=False,
        )
        return
    quantized = Quantization.fp8 if (tier.gpu_type or "").upper() in FP8_GPUS else Quantization.int8
    for quantization in (Quantization.none, quantized)[: 2 if allow_quantized else 1]:
        shapes = [(1, 1)]
        shapes += [(tp, 1) for tp in (2, 4, 8, 16) if tp <= tier.gpus_per_node]
        shapes += [(tier.gpus_per_node, pp) for pp in range(2, tier.nodes + 1)]
        for tp, pp in shapes:
            s = replace(
                base,
                engine=EngineKind.vllm,
                tensor_parallel_size=tp,
                pipeline_parallel_size=pp,
                data_parallel_size=1,
                quantization=quantization,
                auto=False,
            )
            yield replace(s, name=strategy_name(s))


def smallest_fit(
    run: RunConfig, base: StrategyConfig, tier: TierConfig, allow_quantized: bool = True
) -> tuple[Plan | None, list[Plan]]:
    """The first candidate that fits, and the ones tried before it."""
    tried: list[Plan] = []
    for strategy in candidates(base, tier, allow_quantized):
        plan = make_plan(run, strategy, tier)
        if plan.fits:
            return plan, tried
        tried.append(plan)
    return None, tried


def plan_run(run: RunConfig) -> Plan:
    """The plan of a run, resolving ``strategy=auto`` and ``tier=auto`` first.

    With both on auto, a bigger tier is preferred to quantized weights: quantization changes the
    scores being measured, so it is only the answer when no tier has the GPUs.
    """
    if not run.tier.auto:
        return _plan_on_tier(run, run.tier)
    tiers = [load_tier(n) for n in AUTO_TIERS]
    last: Plan | None = None
    for allow_quantized in (False, True):
        for tier in tiers:
            plan = _plan_on_tier(run, tier, allow_quantized)
            if plan.fits:
                plan.explanation = (
                    f"tier=auto picked '{tier.name}', the smallest of "
                    f"{', '.join(AUTO_TIERS)} it fits"
                    + (f"; {plan.explanation}" if plan.explanation else "")
                )
                return plan
            last = plan
    assert last is not None
    last.problems.append(
        f"tier=auto: '{run.model.name}' fits none of {', '.join(AUTO_TIERS)} with strategy "
        f"'{run.strategy.name}'. Fix: strategy=auto, or a quantized strategy (int8, fp8)."
    )
    return last


def _plan_on_tier(run: RunConfig, tier: TierConfig, allow_quantized: bool = True) -> Plan:
    if run.strategy.auto:
        plan, tried = smallest_fit(run, run.strategy, tier, allow_quantized)
        if plan is None:
            worst = tried[-1] if tried else make_plan(run, run.strategy, tier)
            worst.problems.append(
                f"strategy=auto: no deployment of '{run.model.name}' fits tier '{tier.name}' "
                f"({tier.nodes} node(s) x {tier.gpus_per_node} GPUs of "
                f"{tier.gpu_memory_gib:g} GiB), not even {worst.strategy}. Fix: a bigger tier, "
                "or tier=auto."
            )
            return worst
        plan.explanation = _explain(plan, tried, tier)
        return plan
    plan = make_plan(run, run.strategy, tier)
    if not plan.memory.fits:
        fit, _ = smallest_fit(run, run.strategy, tier)
        if fit is not None:
            unit = "per GPU" if fit.device == "cuda" else "of host memory"
            plan.problems.append(
                f"the smallest deployment that fits tier '{tier.name}' is {fit.strategy} "
                f"({fit.memory.needed:.1f} GiB {unit} of {fit.memory.budget:.1f}). Fix: "
                f"{_override_of(fit)}, or strategy=auto."
            )
        elif tier.detected and tier.gpus_per_node < 1:
            plan.problems.append(
                f"tier '{tier.name}' is this machine and it has no GPU (NVML finds none), so "
                f"'{run.strategy.name}' was planned on its CPU, where {run.model.name} does not "
                "fit. Fix: plan for the GPU machine you will run on with its tier "
                f"({', '.join(AUTO_TIERS)}, or auto) and plan_only=true, then run it there "
                "(hydra/launcher=slurm sends it)."
            )
        else:
            plan.problems.append(
                f"no deployment fits tier '{tier.name}'. Fix: a bigger tier "
                f"({', '.join(AUTO_TIERS)}) or tier=auto."
            )
    return plan


def _override_of(plan: Plan) -> str:
    if plan.device != "cuda" or plan.strategy_config is None:
        return "strategy=single"
    return as_override(plan.strategy_config)


def _explain(plan: Plan, tried: list[Plan], tier: TierConfig) -> str:
    where = (
        f"{tier.nodes} node(s) x {tier.gpus_per_node} GPUs of {tier.gpu_memory_gib:g} GiB"
        if plan.device == "cuda"
        else "the CPU"
    )
    line = f"strategy=auto picked {plan.strategy}: the smallest deployment that fits {where}"
    if tried:
        prev = tried[-1]
        line += (
            f" ({prev.strategy} would need {prev.memory.needed:.1f} GiB per GPU of "
            f"{prev.memory.budget:.1f})"
        )
    return line
