"""One run in plain steps: the typed config, the checked plan (``checked.py``), then open and
evaluate resident (``opening.py``), finish and report (``finish.py``). ``harness.app`` is the
entry (Hydra composes, then calls ``run``); tests and benchmarks call these functions directly."""

from __future__ import annotations

import time

from omegaconf import DictConfig

from harness import console
from harness.runner.checked import (
    make_checked_plan,
    resolve_output_dir,
    set_offline,
    typed_config,
    write_plan_only,
)
from harness.runner.finish import finish_run, report_run, run_summary
from harness.runner.opening import OpenRun, evaluate_resident, open_run

__all__ = [
    "OpenRun",
    "evaluate_resident",
    "finish_run",
    "make_checked_plan",
    "open_run",
    "report_run",
    "resolve_output_dir",
    "run",
    "run_summary",
    "typed_config",
]


def run(cfg: DictConfig) -> int:
    """Plan, load the engine once, evaluate every dataset, record everything.

    Args:
        cfg: the composed Hydra config (schema ``RunConfig``).

    Returns:
        The process exit code: 0 when every dataset succeeded, 1 when any failed; in plan-only
        mode 0 when the plan fits, 1 when it does not, 2 when the config breaks a rule.

    Raises:
        HarnessError: bad input, explained; raised before any model is loaded.
    """
    started, started_at = time.perf_counter(), time.time()
    run_cfg = typed_config(cfg)
    chatty = console.configure(run_cfg.verbose, draws_bars=not run_cfg.plan_only)
    set_offline(run_cfg.offline)
    plan = make_checked_plan(run_cfg)  # the only truth of the deployment from here on
    if run_cfg.plan_only:
        write_plan_only(cfg, run_cfg, plan)
        return 2 if plan.bad_input else 0 if plan.fits else 1  # bad input is 2 everywhere
    opened = open_run(cfg, run_cfg, plan, started_at)
    outcomes, load_time, engine_facts = evaluate_resident(opened, run_cfg, plan, chatty)
    timings = (load_time, started)
    summary, unwritten = finish_run(opened, run_cfg, plan, outcomes, timings, engine_facts)
    return report_run(summary, unwritten, opened.tracker, opened.run_dir, run_cfg.verbose)
