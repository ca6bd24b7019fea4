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


class TaskError(HarnessError):
    """A dataset's lm-eval task cannot be found or its data cannot be loaded."""


def did_you_mean(value: str, choices: Iterable[str], n: int = 3) -> str:
    """A ' Did you mean ...?' suffix naming the closest choices, or '' when none is close."""
    close = difflib.get_close_matches(value, list(choices), n=n, cutoff=0.6)
    if not close:
        return ""
    return " Did you mean " + " or ".join(repr(c) for c in close) + "?"
