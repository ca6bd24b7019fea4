"""Rules a run must satisfy before anything expensive starts, all reported at once."""

from __future__ import annotations

from pathlib import Path

from harness.config.endpoint import endpoint_rules
from harness.config.evaluation import evaluation_problems
from harness.config.rules import model_fact_problems, size_problems
from harness.config.schema import RunConfig, TrackingBackend
from harness.errors import number
from harness.paths import PROJECT_ROOT, resolve_project_path


def config_problems(run: RunConfig, *, will_run: bool = True) -> list[str]:
    """Every broken rule of the run outside the deployment plan (see ``harness.config.rules``).

    Args:
        run: the composed, typed run configuration.
        will_run: the model will be loaded (not plan-only): also check that its weights and
            its engine are available here.
    """
    problems: list[str] = []
    problems += size_problems(run.strategy)
    problems += endpoint_rules(run.strategy)
    problems += model_fact_problems(run.model)
    problems += _check_datasets(run)
    problems += evaluation_problems(run)
    problems += _check_tracking(run)
    problems += _check_telemetry(run)
    problems += _check_concurrency(run)
    problems += _check_journal_keep_days(run)
    if will_run:
        problems += _check_model_source(run)
    return problems


def _check_concurrency(run: RunConfig) -> list[str]:
    value = run.max_concurrent_datasets
    if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        return []
    return [
        f"max_concurrent_datasets={value}: must be a number of at least 1, or auto (1 for an "
        "engine in this process, every dataset for one in its own). Fix: "
        "max_concurrent_datasets=auto, or 1 to evaluate datasets one after another."
    ]


def _check_journal_keep_days(run: RunConfig) -> list[str]:
    days = run.journal_keep_days
    if days >= 0:
        return []
    return [
        f"journal_keep_days={number(days)}: must be 0 or more days. Fix: journal_keep_days=14 "
        "(0 removes other settings' request journals as soon as a result is stored)."
    ]


def _check_telemetry(run: RunConfig) -> list[str]:
    interval = run.telemetry.interval_s
    if interval > 0:
        return []
    return [
        f"telemetry.interval_s={number(interval)}: must be a positive number of seconds. Fix: "
        "telemetry.interval_s=1 (or telemetry.enabled=false)."
    ]


def _check_datasets(run: RunConfig) -> list[str]:
    if not run.dataset:
        return [
            "dataset: no dataset selected. Fix: pick at least one, e.g. dataset=[arith_mc] "
            "(options are the files in conf/dataset/)."
        ]
    problems = []
    for name, ds in run.dataset.items():
        if not ds.task:
            problems.append(f"dataset.{name}.task is empty. Fix: name an lm-eval task or group.")
        if ds.num_fewshot is not None and ds.num_fewshot < 0:
            problems.append(
                f"dataset.{name}.num_fewshot={ds.num_fewshot}: must be 0 or more. "
                "Fix: use 0 for zero-shot, or null for the task's default."
            )
        if ds.limit is not None and ds.limit <= 0:
            problems.append(
                f"dataset.{name}.limit={number(ds.limit)}: must be positive (a count, or a "
                "fraction below 1). Fix: use null to evaluate every example."
            )
        if ds.task_path is not None:
            problems += _check_task_root(f"dataset.{name}.task_path", ds.task_path, run)
        if ds.task_path is not None and not resolve_project_path(ds.task_path).is_dir():
            problems.append(
                f"dataset.{name}.task_path={ds.task_path!r}: no such folder "
                f"({resolve_project_path(ds.task_path)}). Fix: point it at a folder of lm-eval "
                "task YAMLs (relative paths start at the project root)."
            )
    for path in run.task_paths:
        problems += _check_task_root("task_paths entry", path, run)
        if not resolve_project_path(path).is_dir():
            problems.append(
                f"task_paths entry {path!r}: no such folder ({resolve_project_path(path)}). "
                "Fix: point it at a folder of lm-eval task YAMLs."
            )
    return problems


def allowed_roots(run: RunConfig) -> list[Path]:
    """Folders task paths may lie under: the project, the current directory, and allowed_roots."""
    roots = [PROJECT_ROOT, Path.cwd(), *(Path(r).expanduser() for r in run.allowed_roots)]
    return list(
        dict.fromkeys(r.resolve() for r in roots)
    )  # each once (the cwd is often the project)


def _check_task_root(what: str, path: str, run: RunConfig) -> list[str]:
    # Task folders hold YAML that may name Python code (!function), run in this process.
    resolved = resolve_project_path(path).resolve()
    roots = allowed_roots(run)
    if any(resolved == r or r in resolved.parents for r in roots):
        return []
    return [
        f"{what} {path!r} resolves to {resolved}, outside the allowed roots "
        f"({', '.join(str(r) for r in roots)}); task folders can run Python code. Fix: move the "
        f"tasks under one of them, or add allowed_roots=[{resolved.parent}] if you trust it."
    ]


def _looks_local(pretrained: str) -> bool:
    return pretrained.startswith(("/", ".", "~")) or pretrained.count("/") != 1


def _check_model_source(run: RunConfig) -> list[str]:
    m = run.model
    local = resolve_project_path(m.pretrained)
    if local.is_dir():
        if not (local / "config.json").is_file():
            return [
                f"model.pretrained={m.pretrained!r}: folder {local} has no config.json, so it is "
                "not a Hugging Face model folder. Fix: point it at a folder saved with "
                "save_pretrained()."
            ]
        return []
    if _looks_local(m.pretrained):
        return [
            f"model.pretrained={m.pretrained!r}: no such folder ({local}). Fix: point it at a "
            "model folder (a relative path starts at the current directory) or a hub id like "
            "org/name."
        ]
    if run.offline and not _in_hub_cache(m.pretrained, m.revision):
        return [
            f"model '{m.name}': weights {m.pretrained!r} are not in the local Hugging Face cache "
            "(nor is there a folder of that name in the current directory), and offline=true "
            "forbids downloading them. Fix: run once with offline=false where "
            f"the hub is reachable, or `hf download {m.pretrained}` beforehand, "
            "or set model.pretrained to a local folder."
        ]
    return []


def _in_hub_cache(repo_id: str, revision: str | None) -> bool:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, "config.json", revision=revision)
    return isinstance(found, str)


def _check_tracking(run: RunConfig) -> list[str]:
    t = run.tracking
    if t.backend == TrackingBackend.mlflow and not t.uri:
        return [
            "tracking.uri is empty while tracking.backend=mlflow. Fix: set tracking.uri, or "
            "choose tracking=local (SQLite under outputs/) or tracking=none."
        ]
    return []
