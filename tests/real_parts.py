"""The real parts the tests start (vLLM, Ray, SLURM, a browser) and the one rule for a missing one.

A test says which part it needs by its marker (``vllm``, ``ray``, ``slurm``, ``browser``);
``tests/conftest.py`` calls ``need()`` for each marker before the test runs. A part that is missing
skips the test, saying why and how to install it, except where that part is required: then the
test fails. A part is required where ``HARNESS_REQUIRE_<PART>=1`` (``.ci/run`` sets all four) or
where ``CI`` is set, so that CI never counts a skipped real part as a pass.

SLURM is checked by its session fixture (``tests/sweep/conftest.py``), which installs Debian's
packages only where SLURM is required (CI), never on a developer's plain run; it calls
``unavailable()`` with its own reason.

The fast tier (``python -m pytest -m fast``, docs/testing.md) is every test marked with none of
these parts and not ``slow`` (``tests/conftest.py`` marks it): it needs only ``.[test]``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass

import pytest


@dataclass(frozen=True)
class Part:
    """One real part some tests need."""

    missing: Callable[[], str | None]
    """Why the part is not here (with how to install it), or None when it is."""


def _vllm() -> str | None:
    from harness.engines.vllm_support.install import CPU_DIST, INSTALL, installed_vllm

    if installed_vllm() is not None:
        return None
    return f"vLLM is not installed here; the full suite's install has it ({INSTALL[CPU_DIST]})"


def _ray() -> str | None:
    from harness.engines.ray.cluster import INSTALL_RAY, ray_installed

    if ray_installed():
        return None
    return f"Ray is not installed here; the full suite's install has it ({INSTALL_RAY})"


def _browser() -> str | None:
    if chromium() is not None:
        return None
    return "chromium is not installed (Debian: apt-get install chromium)"


PARTS: dict[str, Part] = {
    "vllm": Part(_vllm),
    "ray": Part(_ray),
    "browser": Part(_browser),
    "slurm": Part(lambda: None),  # the session fixture checks it, installing where it can
}


def chromium() -> str | None:
    """The chromium executable, or None."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


def required(part: str) -> bool:
    """Whether a missing ``part`` fails a test instead of skipping it."""
    return os.environ.get(f"HARNESS_REQUIRE_{part.upper()}") == "1" or bool(os.environ.get("CI"))


def unavailable(part: str, why: str) -> None:
    """Skip the running test saying ``why``, or fail it where ``part`` is required."""
    if required(part):
        pytest.fail(f"{part} is required here (HARNESS_REQUIRE_{part.upper()}=1 or CI) but {why}")
    pytest.skip(why)


def need(part: str) -> None:
    """Go on when ``part`` is here; else skip or fail (``unavailable``)."""
    why = PARTS[part].missing()
    if why is not None:
        unavailable(part, why)
