"""The plan's memory beside what the engine took, checked once the engine is loaded: recorded
(the ``memory_checked`` event, then summary.json and MLflow) and warned about where a figure is
off by more than ``record.memory_check.THRESHOLD_PCT``."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from harness.console import say
from harness.planning.plan import Plan
from harness.record.memory_check import memory_check

log = logging.getLogger(__name__)


def check_loaded_memory(engine: Any, plan: Plan, emit: Callable[..., None]) -> dict[str, Any]:
    """Set the engine's start-up memory beside the plan's, record it as an event and warn of
    each figure off (console, harness.log). Never fails the run: an engine that cannot say is
    a warning in the log file. Only a vLLM engine reports its start-up memory: no other is
    asked for its facts here (an endpoint's describe looks for its server's process)."""
    if plan.engine != "vllm":
        return {}
    try:
        check = memory_check(plan.to_dict(), engine.describe())
    except Exception as err:  # the check is a record, never a reason to stop evaluating
        log.warning("memory check skipped: %s: %s", type(err).__name__, err)
        return {}
    if not check:
        return {}
    emit("memory_checked", check=check)
    for text in check["warnings"]:
        say(f"warning: {text}", err=True, level=logging.WARNING)
    return check
