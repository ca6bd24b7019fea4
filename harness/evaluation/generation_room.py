"""A generation task's room in the model's context, checked before the model loads.

lm-eval's HF model asserts, at a dataset's first generation, that the tokens a request may
generate (``max_gen_toks``) are fewer than the model's context, the rest being the prompt's:
gsm8k's 256 on the bundled 256-token model stopped a run mid-way with a bare AssertionError
(vLLM's model cuts the prompt to nothing instead). The same rule, checked on the built tasks
against the plan's ``max_model_len``, refuses the run before any engine is built, as every bad
input is (exit 2).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from harness.config.evaluation import parse_gen_kwargs, settings_for
from harness.errors import TaskError
from harness.evaluation.tasks import leaf_tasks

if TYPE_CHECKING:
    from harness.config.schema import RunConfig
    from harness.evaluation.tasks import PreparedDataset
    from harness.planning.plan import Plan

DEFAULT_MAX_GEN_TOKS = 256
"""What lm-eval's models generate at most when a task does not say (``HFLM.max_gen_toks``,
``VLLM(max_gen_toks=256)``)."""
ALIASES = ("max_gen_toks", "max_new_tokens", "max_tokens", "max_completion_tokens")
"""The names lm-eval reads the count under, the first one present winning
(``lm_eval.models.utils.normalize_gen_kwargs``)."""


def max_gen_toks(
    task_kwargs: Mapping[str, Any], given: Mapping[str, Any], default: int
) -> tuple[int, str]:
    """The count a task's requests generate at most, and where it comes from: the task's own
    ``generation_kwargs`` updated by the run's ``gen_kwargs`` (as lm-eval updates them)."""
    merged = {**task_kwargs, **given}
    for alias in ALIASES:
        if merged.get(alias) is not None:
            source = "gen_kwargs" if alias in given else "the task's generation_kwargs"
            return int(merged[alias]), f"{alias}, {source}"
    return default, "lm-eval's default"


def generation_room_problems(
    run: RunConfig, plan: Plan, datasets: Mapping[str, PreparedDataset]
) -> list[str]:
    """Each generation task whose ``max_gen_toks`` leaves its prompt no room in
    ``plan.max_model_len`` tokens, with the value, the rule and the fix."""
    limit = plan.max_model_len
    default = int(plan.engine_args.get("max_gen_toks") or DEFAULT_MAX_GEN_TOKS)
    context = plan.model_config.context_window if plan.model_config else None
    longer = (
        f", or strategy.max_model_len={context} (the model's context window)"
        if context and context > limit
        else ", or a model with a longer context"
    )
    problems = []
    for name, prepared in datasets.items():
        given = parse_gen_kwargs(settings_for(run, prepared.config).gen_kwargs) or {}
        for leaf in leaf_tasks(prepared.task):
            if getattr(leaf, "OUTPUT_TYPE", None) != "generate_until":
                continue
            config = getattr(leaf, "config", None)
            own = getattr(config, "generation_kwargs", None) or {}
            count, source = max_gen_toks(own, given, default)
            if count < limit:
                continue
            problems.append(
                f"dataset '{name}': task {getattr(config, 'task', name)!r} generates up to "
                f"max_gen_toks={count} tokens ({source}), which must be fewer than the model's "
                f"context of {limit} tokens (max_model_len), the rest being the prompt's (lm-eval "
                f"stops at the first generation otherwise). Fix: dataset.{name}.gen_kwargs="
                f"{{max_gen_toks:{max(1, limit // 2)}}} (fewer than {limit}){longer}."
            )
            break  # one line per dataset: the fix is the dataset's
    return problems


def check_generation_room(
    run: RunConfig, plan: Plan, datasets: Mapping[str, PreparedDataset]
) -> None:
    """Raise :class:`TaskError` (exit 2) listing every :func:`generation_room_problems`."""
    problems = generation_room_problems(run, plan, datasets)
    if problems:
        noun = "dataset" if len(problems) == 1 else "datasets"
        raise TaskError(
            f"{len(problems)} {noun} cannot be evaluated:\n"
            + "\n".join(f"  - {p}" for p in problems)
        )
