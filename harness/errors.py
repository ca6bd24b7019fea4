"""Errors a user can fix. They end the run with a clean message and no traceback."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class HarnessError(Exception):
    """A problem with the user's input or environment, explained so that it can be fixed."""

    exit_code = 2


class ConfigError(HarnessError):
    """One or more configuration rules are broken; the message lists every one of them."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        noun = "problem" if len(problems) == 1 else "problems"
        super().__init__(f"{len(problems)} configuration {noun}:\n{lines}")


class Terminated(KeyboardInterrupt):
    """SIGTERM (``scancel``, a SLURM time limit, ``docker stop``, Kubernetes), raised in the main
    thread so that a run ends as it does on Ctrl-C: its MLflow runs KILLED, ``run_done`` written,
    one line on the console."""

    exit_code = 143


def raise_terminated(signum: int, frame: object) -> None:
    """The SIGTERM handler of ``python -m harness``."""
    raise Terminated


class TaskError(HarnessError):
    """A dataset's lm-eval task cannot be found or its data cannot be loaded."""


def did_you_mean(value: str, choices: Iterable[str], n: int = 3) -> str:
    """A ' Did you mean ...?' suffix naming the closest choices, or '' when none is close."""
    close = difflib.get_close_matches(value, list(choices), n=n, cutoff=0.6)
    if not close:
        return ""
    return " Did you mean " + " or ".join(repr(c) for c in close) + "?"


def number(value: object) -> str:
    """A value as the user typed it: ``5``, not the ``5.0`` that a float-typed setting holds."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
