"""Scoring of ``succ_exec``: the model's answer is run as Python code (why the task is marked
``unsafe_code: true``, so that lm-eval and harness refuse it without
``confirm_run_unsafe_code``, as they refuse humaneval and mbpp).

The generated text goes into ``assert (<answer>) == <n + 1>``, run by a fresh Python with a
time limit: a pass is a program that runs and asserts true, as pass@1 counts it.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

TIMEOUT_S = 10.0


def passes(program: str) -> bool:
    """Whether ``program`` runs to the end in a fresh Python within ``TIMEOUT_S``."""
    try:
        done = subprocess.run(
            [sys.executable, "-I", "-c", program],
            capture_output=True,
            timeout=TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return False
    return done.returncode == 0


def process_results(doc: dict[str, Any], results: list[str]) -> dict[str, float]:
    answer = results[0].strip()
    program = f"assert ({answer}) == {int(doc['n']) + 1}" if answer else "raise SystemExit(1)"
    return {"pass_at_1": 1.0 if passes(program) else 0.0}
