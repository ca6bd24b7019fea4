"""The GPU check's frame and its first steps (wheels, size, closure, py312): each step returns a
one-line summary and its figures, or raises ``StepFailed`` saying why; every process a step starts
runs from the tree, offline, under the time left to the check (benchmarks/gpu_check.py runs them;
the steps that need torch are in gpu_check_gpu.py).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gpu_check_wheels as wheels
from common import offline_env

ROOT = wheels.ROOT
FAKE_NVML = ROOT / "tests" / "fake_nvml"
FAKE_H200 = "1xNVIDIA H200:143771"
"""The node's GPU as NVML lists it (the device notes: one H200, 143771 MiB)."""
NOT_ON_NODE = ("mlflow", "ray", "vllm")
"""Packages the node lacks that some tests import: the dry run hides them as the node would."""
CAPS = {
    "wheels": 600,
    "size": 30,
    "closure": 30,
    "py312": 240,
    "default_cuda": 150,
    "llama8b": 270,
    "served": 360,
    "gpu_tests": 200,
    "cpu_tests": 600,
}
"""Each step's own time limit in seconds (less when the check's time runs short)."""


class StepFailed(Exception):
    """A step's check did not hold; the message says what was seen."""


class StepSkipped(Exception):
    """A step that cannot run here (what it needs is missing); the message says what. Recorded
    as ``skipped``, never as passed."""


@dataclass
class Context:
    dry: bool
    wheels: Path
    work: Path
    out: Path
    deadline: float
    smoke_cpu_tests: bool
    python: str = sys.executable
    """The interpreter of the steps that need torch (the node's; here, the 3.11 venv's)."""
    py312: str | None = None
    """The Python 3.12 of step ``py312`` (the node's own; here, a throwaway venv's)."""

    def left(self, step: str) -> float:
        return min(CAPS[step], self.deadline - time.time())


def machine() -> dict[str, Any]:
    return {
        "host": platform.node(),
        "python": platform.python_version(),
        "executable": sys.executable,
        "cpus": os.cpu_count(),
    }


def describe(python: str) -> str:
    """``3.12.3 (/opt/torch/.venv/bin/python3)`` for an interpreter."""
    version = subprocess.run(
        [python, "-c", "import platform; print(platform.python_version())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    return f"{version} ({python})"


def env(ctx: Context, *, fake_gpu: bool = True, block: bool = True, **extra: str) -> dict[str, str]:
    """The steps' environment: offline, the tree and plugins importable, on the node the wheels'
    site first (gpu_check.sh); in the dry run the node's missing packages hidden (a
    ``sitecustomize``; not where ``block`` is false) and, where ``fake_gpu``, the tests' fake
    NVML of an H200."""
    path = [str(ROOT), str(ROOT / "plugins")]
    values: dict[str, str] = {
        "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "PYTHONUNBUFFERED": "1",
    }
    if ctx.dry and block:
        path = [str(blocker(ctx)), *path]
    if ctx.dry and fake_gpu:
        path.insert(0, str(FAKE_NVML))
        values["FAKE_NVML_GPUS"] = FAKE_H200
    inherited = os.environ.get("PYTHONPATH", "")
    values["PYTHONPATH"] = os.pathsep.join([*path, inherited] if inherited else path)
    return offline_env(ctx.work, **values, **extra)


def blocker(ctx: Context) -> Path:
    """A folder whose sitecustomize hides mlflow, ray and vllm as the node lacks them: the path
    finder answers "not found" for them (``find_spec`` is None, ``import`` fails)."""
    folder = ctx.work / "node_blocker"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(
        "import sys\nfrom importlib.machinery import PathFinder\n\n\n"
        "class _NotOnNode(PathFinder):\n"
        "    @classmethod\n"
        "    def find_spec(cls, name, path=None, target=None):\n"
        f"        if name.partition('.')[0] in {NOT_ON_NODE!r}:\n"
        "            return None\n"
        "        return PathFinder.find_spec(name, path, target)\n\n\n"
        "sys.meta_path[:] = [_NotOnNode if f is PathFinder else f for f in sys.meta_path]\n"
    )
    return folder


def run(
    ctx: Context,
    step: str,
    cmd: list[str],
    *,
    python: str | None = None,
    fake_gpu: bool = True,
    block: bool = True,
    **extra: str,
) -> str:
    """Run ``cmd`` (``python`` first) from the tree; its output goes to the step's log.

    Returns the output; raises StepFailed on a non-zero exit or when the step's time runs out
    (its whole process group is ended then).
    """
    full = [python or ctx.python, *cmd]
    limit = ctx.left(step)
    if limit <= 5:
        raise StepFailed("no time left")
    log = ctx.work / f"log_{step}.txt"
    with log.open("a") as f:
        f.write(f"$ {' '.join(full)}\n")
        f.flush()
        proc = subprocess.Popen(
            full,
            cwd=ROOT,
            env=env(ctx, fake_gpu=fake_gpu, block=block, **extra),
            stdout=f,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            code = proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise StepFailed(f"timed out after {limit:.0f}s: {' '.join(cmd[:4])}") from None
    text = log.read_text(errors="replace")
    if code != 0:
        tail = "\n".join(text.splitlines()[-40:])
        print(f"--- {step}: {' '.join(cmd[:4])} exited {code}; its last lines:\n{tail}\n---")
        raise StepFailed(f"{' '.join(cmd[:4])} exited {code} (log_{step}.txt in steps.log)")
    return text


Step = Callable[[Context], tuple[str, dict[str, Any]]]
"""A step: its one-line summary and its figures, or ``StepFailed``."""


def run_step(ctx: Context, name: str, fn: Step) -> dict[str, Any]:
    """One step, timed; its figures, or why it failed, in one record."""
    t0 = time.time()
    record: dict[str, Any] = {"step": name, "python": "", "status": "ok", "summary": ""}
    try:
        summary, figures = fn(ctx)
        record["summary"], record["figures"] = summary, figures
    except StepFailed as err:
        record["status"], record["summary"] = "failed", str(err)
    except StepSkipped as err:
        record["status"], record["summary"] = "skipped", str(err)
    except Exception as err:  # a bug of the check itself: say so and go on to the next step
        record["status"], record["summary"] = "failed", f"{type(err).__name__}: {err}"
        record["traceback"] = traceback.format_exc()
        print(record["traceback"])
    python = ctx.py312 if name == "py312" else ctx.python
    record["python"] = describe(python).split()[0] if python else "3.12 (none)"
    record["interpreter"] = python
    record["seconds"] = round(time.time() - t0, 1)
    return record


def newest_run(root: Path) -> Path:
    """The newest run directory under ``root`` (an outputs_root)."""
    runs = sorted((root / "runs").iterdir(), key=os.path.getmtime)
    if not runs:
        raise StepFailed(f"no run directory under {root}")
    return runs[-1]


def step_wheels(ctx: Context) -> tuple[str, dict[str, Any]]:
    pins = wheels.read_pins()
    actions = wheels.build_folder(pins, ctx.wheels)
    files = sorted(w.name for w in ctx.wheels.glob("*.whl"))
    if len(files) != len(pins):
        raise StepFailed(f"{len(files)} wheels in {ctx.wheels} for {len(pins)} pins")
    done = f"; {len(actions)} fetched or built" if actions else " (all there already)"
    return f"{len(files)} wheels for Python 3.12{done}", {"wheels": files, "actions": actions}


def step_size(ctx: Context) -> tuple[str, dict[str, Any]]:
    size = wheels.travelling_size(ctx.wheels)
    line = (
        f"would travel {size['total_mib']:.1f} MiB of {size['limit_mib']} (tree "
        f"{size['tree_mib']:.1f} + wheels {size['wheels_mib']:.1f})"
    )
    if size["total_mib"] > size["limit_mib"]:
        raise StepFailed(line)
    return line, size


def step_closure(ctx: Context) -> tuple[str, dict[str, Any]]:
    installed = wheels.NODE_PACKAGES if ctx.dry else wheels.installed_here()
    found = wheels.closure(ctx.wheels, installed, wheels.harness_requires())
    version = wheels.NODE_PYTHON if ctx.dry else platform.python_version()
    admitted, spec = wheels.python_admitted(version)
    if not admitted:
        found["problems"].append(f"requires-python {spec} refuses the node's Python {version}")
    keys = ("torch", "transformers", "accelerate", "huggingface-hub", "datasets", "lm-eval")
    keys += ("pyarrow", "fsspec", "pandas", "numpy", "nvidia-ml-py", "pytest", "hydra-core")
    found["versions_seen"] = [f"{k} {installed.get(k) or '?'}" for k in keys]
    against = "the node's package list (device notes)" if ctx.dry else "this interpreter"
    line = (
        f"{len(found['problems'])} unmet, {len(found['versions'])} off-range needs, against "
        f"{against}"
    )
    if found["problems"]:
        raise StepFailed(f"{line}: {'; '.join(found['problems'])}")
    return line, found


def py312_venv(ctx: Context) -> str:
    """The dry run's Python 3.12: a venv with the carried wheels and, in place of the node's
    image, the few packages that importing and planning need (no torch)."""
    base = os.environ.get("GPU_CHECK_PY312") or shutil_which_312()
    venv = ctx.work / "py312"
    python = str(venv / "bin" / "python")
    if not Path(python).exists():
        subprocess.run([base, "-m", "venv", str(venv)], check=True, timeout=120)
    standins = ctx.work / "standins"
    names = ["PyYAML", "packaging", "nvidia-ml-py", "cloudpickle", "typing_extensions"]
    import importlib.metadata as md

    pins = [f"{n}=={md.version(n)}" for n in names]
    pip = [python, "-m", "pip", "-q", "--disable-pip-version-check"]
    subprocess.run(
        [*pip, "download", "--no-deps", "--only-binary=:all:", "-d", str(standins), *pins],
        check=True,
        timeout=300,
        capture_output=True,
    )
    found = [str(w) for w in [*ctx.wheels.glob("*.whl"), *standins.glob("*.whl")]]
    subprocess.run(
        [*pip, "install", "--no-index", "--no-deps", "--no-compile", *found],
        check=True,
        timeout=300,
        capture_output=True,
    )
    return python


def shutil_which_312() -> str:
    """A Python 3.12 that runs here: pyenv's, else ``python3.12`` on PATH."""
    pyenv = sorted(Path("/root/.pyenv/versions").glob("3.12*/bin/python3.12"))
    for candidate in [*map(str, pyenv), shutil.which("python3.12")]:
        if candidate and subprocess.run([candidate, "-V"], capture_output=True).returncode == 0:
            return candidate
    raise StepFailed("no Python 3.12 here (set GPU_CHECK_PY312)")


def step_py312(ctx: Context) -> tuple[str, dict[str, Any]]:
    python = py312_venv(ctx) if ctx.dry else ctx.python
    ctx.py312 = python
    version = describe(python)
    if not version.startswith("3.12."):
        raise StepFailed(f"expected Python 3.12, found {version}")
    prefix = str(ctx.work / "pycache")  # compile without writing .pyc files into the tree
    folders = ["harness", "plugins/hydra_plugins", "tests", "benchmarks"]
    run(
        ctx,
        "py312",
        ["-m", "compileall", "-q", *folders],
        python=python,
        PYTHONPYCACHEPREFIX=prefix,
    )
    run(ctx, "py312", ["-c", "import harness.app, harness.planning.preflight"], python=python)
    outputs = ctx.work / "plan312"
    shutil.rmtree(outputs, ignore_errors=True)
    args = ["model=llama3_1_8b", "strategy=single", "tier=local", "plan_only=true"]
    run(ctx, "py312", ["-m", "harness", *args, f"outputs_root={outputs}"], python=python)
    plan = json.loads((newest_run(outputs) / "plan.json").read_text())
    if plan["device"] != "cuda" or not plan["fits"]:
        raise StepFailed(f"plan-only: device {plan['device']}, fits {plan['fits']}")
    m = plan["memory"]
    line = f"compiles, imports, plans llama3_1_8b on {plan['device']}: {m['needed']} GiB/GPU, fits"
    return line, {"python": version, "plan": {"device": plan["device"], "memory": m}}
