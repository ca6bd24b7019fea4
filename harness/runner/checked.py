"""Before a run opens: the typed config, the checked plan (printed), plan-only's record, and
where the run's directory is."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from harness.config.schema import RunConfig, to_run_config
from harness.console import say
from harness.errors import ConfigError, HarnessError
from harness.planning.plan import Plan

if TYPE_CHECKING:
    from harness.record.rundir import RunDirectory

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
    if run_cfg.plan_only:  # a run checks samples on lm-eval's built tasks (opening.py)
        from harness.evaluation.sample_count import plan_only_sample_check

        outside, unchecked = plan_only_sample_check(run_cfg)
        plan.problems += outside
        plan.bad_input += outside
        plan.notes += unchecked
    # plan-only shows the table and its problems; a run one line (the table if verbose), its
    # problems said once, in the error block it raises below
    table = format_plan(plan, problems=run_cfg.plan_only)
    say(table if run_cfg.plan_only or run_cfg.verbose else format_plan_line(plan), record=table)
    if run_cfg.plan_only:
        return plan
    problems = list(plan.problems)
    problems += engine_problems(plan)
    if run_cfg.offline:  # hub data this node lacks: refused with the rest, before any import
        from harness.evaluation.tasks import missing_data_problems

        problems += missing_data_problems(run_cfg).values()
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
    refuse_used_directory(run_dir, typed)  # a plan never overwrites another run's record
    run_dir.write_config(typed)
    say(f"plan written to {run_dir.write_plan(plan.to_dict())}")


def typed_config(cfg: DictConfig) -> RunConfig:
    """The composed config as ``RunConfig``; a key the schema does not know is refused."""
    from harness.config.keys import composed_key_problems

    unknown = composed_key_problems(cfg)
    if unknown:
        raise ConfigError(unknown)
    return to_run_config(cfg)


SAME_RUN_DESPITE = ("verbose", "attach")
"""Settings that change how a run is shown or served, not which run it is: a run resumed with
another of these is still the same run."""


def refuse_used_directory(run_dir: RunDirectory, typed: dict[str, Any]) -> bool:
    """One run, one directory: a directory that already holds a run takes this one only as
    that run resumed (its ``config.yaml`` the same as ``typed``); returns whether it resumes.

    Raises:
        ConfigError: the directory holds another run (another config), or a run still going.
    """
    if not run_dir.holds_run():
        return False
    root = run_dir.root
    writer = live_writer(run_dir)
    fix = (
        f"Fix: output_dir=<a folder of its own> (or leave output_dir unset: a new one each "
        f"run), or remove {root} first"
    )
    if writer is not None:
        raise ConfigError(
            [
                f"output_dir={root}: a run is still being written there by process {writer} on "
                f"this host; a run directory holds one run. {fix}."
            ]
        )
    differ = [
        k for k in run_dir.config_differences(typed) if k.split(".")[0] not in SAME_RUN_DESPITE
    ]
    if differ:
        shown = ", ".join(differ[:6]) + (f" and {len(differ) - 6} more" if len(differ) > 6 else "")
        raise ConfigError(
            [
                f"output_dir={root} holds another run (its {run_dir.CONFIG} differs in {shown}); "
                "a run directory holds one run, and this one would merge into it. "
                f"{fix}, or run that run's own command again to resume it."
            ]
        )
    return True


def live_writer(run_dir: RunDirectory) -> int | None:
    """The pid of a process on this host whose run in ``run_dir`` has not ended (its last
    ``planned`` event has no ``run_done`` after it and the process is alive), or None."""
    import socket

    from harness.record.events import read_events

    events = read_events(run_dir.events)
    starts = [i for i, e in enumerate(events) if e.get("event") == "planned"]
    if not starts or any(e.get("event") == "run_done" for e in events[starts[-1] :]):
        return None
    planned = events[starts[-1]]
    pid, host = planned.get("pid"), planned.get("host")
    if not isinstance(pid, int) or host != socket.gethostname() or pid == os.getpid():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:  # alive, another user's
        pass
    return pid
