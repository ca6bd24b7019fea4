"""The checked plan a run and a sweep's job both start from: every rule, then the plan.

One function for both, so a sweep refuses exactly what the run itself would refuse (less what
belongs to the node that will run it: its GPUs and the engine installed there, which the run
checks on arrival, ``harness.engines.engine_problems``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from harness.config.engine_args import unknown_problems
from harness.config.evaluation import chat_templates_asked, engine_args
from harness.config.rules import engine_rules, input_rules, model_fact_problems, plannable
from harness.config.schema import RunConfig
from harness.config.validate import config_problems
from harness.errors import ConfigError
from harness.planning.auto import plan_run
from harness.planning.checkpoint import chat_template_problems
from harness.planning.model_facts import resolve_model
from harness.planning.plan import Plan, stall_limit


def checked_plan(run: RunConfig) -> Plan:
    """Validate ``run`` and plan it; the plan's ``problems`` hold every broken rule.

    The model's facts are read first (from its checkpoint where it has one), so nothing is
    planned from figures the checkpoint contradicts. ``run`` is not changed: the plan carries
    the model and the strategy it was made from (``model_used``, ``strategy_used``).

    Raises:
        ConfigError: the model's facts cannot be read, or are unusable (nothing can be planned
            from them); every other problem found is listed with it.
    """
    try:
        model, notes = resolve_model(run.model, run.offline)
    except ConfigError as err:  # report what else is wrong too, none of it planned from figures
        others = config_problems(run, will_run=False) + engine_rules(run.strategy)
        raise ConfigError(err.problems + others) from None
    as_read = replace(run, model=model)  # a copy: the run's config stays as typed
    problems = config_problems(as_read, will_run=not run.plan_only)
    if model_fact_problems(model):
        raise ConfigError(problems)  # nothing can be planned from such figures
    plan = plan_run(replace(as_read, strategy=plannable(run.strategy)))
    asked = chat_templates_asked(run)
    if asked:  # lm-eval would find a missing template only after the load
        problems += chat_template_problems(
            model.pretrained, model.revision, run.model.pretrained, asked
        )
    problems += engine_arg_problems(run)
    plan.engine_args = engine_args(run)
    # the plan's own rules that no tier mends are bad input too (2, REFUSED), not a misfit (1)
    used = plan.model_config or model, plan.strategy_config or run.strategy
    broken = set(input_rules(*used))
    problems += stall_refusal(plan)
    plan.bad_input = problems + [p for p in plan.problems if p in broken]
    plan.problems = problems + plan.problems
    plan.notes = notes + plan.notes
    return plan


def stall_refusal(plan: Plan) -> list[str]:
    """A ``strategy.stall_timeout_s`` typed below what one call of the planned engine may take
    (``plan.stall_limit``): bad input, said with the least value that works. Checked on the
    plan chosen, so that ``strategy=auto`` does not take it for a misfit of every candidate."""
    if plan.strategy_config is None or plan.model_config is None:
        return []  # nothing was planned
    num_params = plan.model_config.num_params
    at_once = plan.datasets_at_once
    refused = stall_limit(plan.strategy_config, num_params, plan.device, at_once)[1]
    return [refused] if refused else []


def engine_arg_problems(run: RunConfig) -> list[str]:
    """Keys of ``strategy.engine_args`` the engine does not take: found by the plan, so that
    plan-only refuses them as a run does (a served model's arguments are refused elsewhere)."""
    given = run.strategy.engine_args
    if not given or not isinstance(given, Mapping) or run.strategy.engine.value == "endpoint":
        return []  # none given: the installed sources are not read (a plan stays quick)
    return unknown_problems(run.strategy.engine.value, given)
