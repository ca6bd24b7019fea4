"""What the benchmark scripts share: their CLI tail, the work folder, the offline environment of
the runs they start, the machine and load they ran on, and the JSON file of their figures.

The scripts run as ``python benchmarks/<name>.py``, which puts benchmarks/ first on sys.path, so
they import this module as ``common``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def add_common_args(parser: argparse.ArgumentParser, *, out: bool = True) -> None:
    """``--out`` (unless ``out`` is false) and ``--json``, after a script's own flags."""
    if out:
        parser.add_argument(
            "--out", type=Path, default=None, help="work folder (default: a temp dir)"
        )
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")


def cli(
    doc: str | None,
    add_cli_args: Callable[[argparse.ArgumentParser], None],
    main: Callable[[argparse.Namespace], Any],
) -> None:
    """Parse the command line with the script's flags (its docstring's first line as the
    description) and run its ``main``."""
    parser = argparse.ArgumentParser(description=(doc or "").splitlines()[0])
    add_cli_args(parser)
    main(parser.parse_args())


def work_folder(out: Path | None, prefix: str) -> Path:
    """``--out``, created if missing, else a new temporary folder named ``prefix``..."""
    work = out or Path(tempfile.mkdtemp(prefix=prefix))
    work.mkdir(parents=True, exist_ok=True)
    return work


def offline_env(work: Path, **extra: str) -> dict[str, str]:
    """This process's environment for a run that must not reach the hub: a hub cache of its own
    in ``work`` and the offline switches, plus ``extra``."""
    return {
        **os.environ,
        "HF_HOME": str(work / "hf_home"),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        **extra,
    }


def timed(cmd: list[str], cwd: Path, env: dict[str, str]) -> float:
    """Run a command to its end; its wall time. A failure ends the benchmark, with what the
    command said."""
    import subprocess
    import sys
    import time

    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return wall


def machine_description(*, host: bool = True, usable_cpus: bool = False) -> str:
    """``[host ]arch, N CPUs, Python X.Y.Z``; N counts this process's CPU affinity when
    ``usable_cpus``, else every CPU of the machine."""
    cpus = len(os.sched_getaffinity(0)) if usable_cpus else os.cpu_count()
    name = f"{platform.node()} " if host else ""
    return f"{name}{platform.machine()}, {cpus} CPUs, Python {platform.python_version()}"


def loadavg() -> str:
    """The 1, 5 and 15 minute load averages: how busy the machine was with other work."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def write_json(path: Path | None, obj: Any) -> None:
    """``obj`` as indented JSON at ``path`` (``--json``); nothing when no path was given."""
    if path:
        path.write_text(json.dumps(obj, indent=2) + "\n")
