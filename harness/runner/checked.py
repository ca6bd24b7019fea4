"""Before a run opens: the typed config, the checked plan (printed), plan-only's record, and
where the run's directory is."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from harness.config.schema import RunConfig, to_run_config
from harness.console import say
from harness.errors import ConfigError, HarnessError
from harness.planning.plan import Plan

log = logging.getLogger("harness")


def set_offline(offline: bool) -> None:
    """Keep every hub client off the network; must happen before they are imported."""
    if offline:
        for key in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
            os.environ[key] = "1"


def resolve_output_dir(run: RunConfig) -> Path:
    """This run's directory: ``output_dir`` when set, else Hydra's run directory."""
    if run.output_dir:
        return Path(run.output_dir).resolve()
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir).resolve()
    raise HarnessError("output_dir is not set and no Hydra run directory exists: set output_dir.")


def make_checked_plan(run_cfg: RunConfig) -> Plan:
    """Validate the run and plan its deployment; print the plan.

    In plan-only mode the plan's problems are printed with it; in a real run every problem
    (config, deployment, memory fit, this node's GPUs) is raised at once.
    """
    from harness.engines import engine_problems
    from harness.planning.preflight import checked_plan
    from harness.views import format_plan, format_plan_line

    plan = checked_plan(run_cfg)
    if run_cfg.tier.detected:
        from harness.machine.node import this_node

        plan.notes.append(this_node().describe())
    here = run_cfg.tier.detected or not run_cfg.plan_only  # the group's GPUs are this node's
    if plan.device == "cuda" and plan.tensor_parallel_size > 1 and here:
        from harness.machine.node import tensor_parallel_link_note

        link = tensor_parallel_link_note(plan.tensor_parallel_size)
        if link:
            plan.notes.append(link)
            log.warning(link)
    table = format_plan(plan)  # a run shows one line unless verbose; plan_only, the table
    say(table if run_cfg.plan_only or run_cfg.verbose else format_plan_line(plan), record=table)
    if run_cfg.plan_only:
        return plan
    problems = list(plan.problems)
    problems += engine_problems(plan)
    if plan.device == "cuda":
        from harness.machine.node import detect_gpus, hardware_problems

        on_node = -(-plan.gpus_needed // max(plan.nodes_needed, 1))  # GPUs on each node
        problems += hardware_problems(plan.device, on_node, detect_gpus())
    if problems:
        raise ConfigError(problems)
    return plan


def write_plan_only(cfg: DictConfig, run_cfg: RunConfig, plan: Plan) -> None:
    """Plan-only's record in the run directory: ``config.yaml`` (the config as typed, masked)
    and ``plan.json`` (what it planned), as a real run writes them."""
    from harness.record.rundir import RunDirectory
    from harness.secrets import mask_tree

    run_dir = RunDirectory(resolve_output_dir(run_cfg))
    typed = mask_tree(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True))
    run_dir.write_config(typed)
    say(f"plan written to {run_dir.write_plan(plan.to_dict())}")


def typed_config(cfg: DictConfig) -> RunConfig:
    """The composed config as ``RunConfig``; a key the schema does not know is refused."""
    from harness.config.keys import composed_key_problems

    unknown = composed_key_problems(cfg)
    if unknown:
        raise ConfigError(unknown)
    return to_run_config(cfg)
