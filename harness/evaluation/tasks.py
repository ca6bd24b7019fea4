"""Find each dataset's lm-eval task and load its data, before any model is loaded.

Indexing lm-eval's 14,685 built-in task configs takes about 10 s, so the bundled suite and the
user's task folders are indexed first, and the built-ins only when a dataset asks for one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.config.evaluation import settings_for
from harness.config.schema import DatasetConfig, RunConfig
from harness.errors import TaskError, did_you_mean
from harness.evaluation.hub_data import download_command, hub_snapshots_offline
from harness.paths import PLUGINS_DIR, resolve_project_path

log = logging.getLogger(__name__)

BUNDLED_TASKS_DIR = PLUGINS_DIR / "tasks"


@dataclass
class PreparedDataset:
    """A dataset whose lm-eval task is built and whose data is loaded."""

    name: str
    """Key of the dataset in the run config."""
    config: DatasetConfig
    """The dataset's settings."""
    task: Any
    """The lm-eval Task or Group (or, for a tag, a list of Tasks) handed to ``simple_evaluate``."""
    builtin: bool
    """Whether the task comes from lm-eval's own task folder."""
    manager: Any
    """The TaskManager that built the task; reused so lm-eval does not index its built-ins again."""


def task_folders(run: RunConfig) -> list[Path]:
    """The bundled suite, then the run's extra task paths, then each dataset's own."""
    folders = [BUNDLED_TASKS_DIR]
    folders += [resolve_project_path(p) for p in run.task_paths]
    folders += [resolve_project_path(d.task_path) for d in run.dataset.values() if d.task_path]
    unique: list[Path] = []
    for folder in folders:
        if folder not in unique:
            unique.append(folder)
    return unique


class _QuietCustomDatasetHint(logging.Filter):
    """lm-eval warns on every load of a ``custom_dataset`` task that kwargs can be passed via
    ``--metadata``; for the bundled suite that is noise, not a warning."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Custom kwargs can be passed" not in record.getMessage()


def unreadable_task_files(folders: list[Path]) -> list[str]:
    """YAML files in the user's task folders that lm-eval would skip without a word."""
    from lm_eval.tasks._yaml_loader import load_yaml

    broken = []
    for folder in folders:
        if folder == BUNDLED_TASKS_DIR:
            continue
        for path in sorted(folder.rglob("*.yaml")):
            try:
                load_yaml(path, resolve_func=False, recursive=True)
            except Exception as err:  # any parse failure is reported, with its own words
                broken.append(f"{path}: {_first_line(err)}")
    return broken


def build_task_manager(folders: list[Path], wanted: list[str], ours: Any | None = None) -> Any:
    """A TaskManager over our folders, widened to lm-eval's built-ins only if needed.

    Args:
        ours: a TaskManager over ``folders`` alone already built (it is not built again).
    """
    from lm_eval.tasks import TaskManager

    manager = ours or TaskManager(include_path=[str(f) for f in folders], include_defaults=False)
    if all(name in manager.all_tasks for name in wanted):
        return manager
    log.info("indexing lm-eval's built-in tasks (about 10 s)")
    return TaskManager(include_path=[str(f) for f in folders], include_defaults=True)


def missing_data_problems(run: RunConfig) -> dict[str, str]:
    """Offline, each dataset whose hub data is not on this machine -> its refusal, naming each
    repo and the command that fetches it; empty online. Read from the task files alone (no task
    built, lm-eval's task manager and `datasets` not imported, the built-ins not indexed whole):
    a second or two, so the run is refused with every other problem it has, before anything
    loads."""
    if not run.offline:
        return {}
    from harness.evaluation.hub_data import missing_data_problem, missing_hub_data, run_task_index

    wanted = {name: ds.task for name, ds in run.dataset.items()}
    index = run_task_index(task_folders(run), list(dict.fromkeys(wanted.values())))
    missing = missing_hub_data(wanted, index)
    return {k: missing_data_problem(k, wanted[k], lacking) for k, lacking in missing.items()}


def prepare_datasets(run: RunConfig) -> dict[str, PreparedDataset]:
    """Build every dataset's task and load its data; report all failures at once.

    Raises:
        TaskError: a task is unknown or its data cannot be loaded; the message lists each
            dataset's problem and its fix.
    """
    task_log = logging.getLogger("lm_eval.api.task")
    if not any(isinstance(f, _QuietCustomDatasetHint) for f in task_log.filters):
        task_log.addFilter(_QuietCustomDatasetHint())
    folders = task_folders(run)
    lacking = missing_data_problems(run)  # refused, and not built: each task would try the hub
    problems: list[str] = list(lacking.values())
    others = {name: ds for name, ds in run.dataset.items() if name not in lacking}
    wanted = [d.task for d in others.values()]
    manager: Any = build_task_manager(folders, wanted) if others else None
    broken: list[str] | None = None
    prepared: dict[str, PreparedDataset] = {}
    for name, ds in others.items():
        if ds.task not in manager.all_tasks:
            if broken is None:
                broken = unreadable_task_files(folders)
            unreadable = (
                f" These task files could not be read: {'; '.join(broken)}." if broken else ""
            )
            fix = (  # a name given alone (dataset=[name]) or an option file's task
                "dataset=[...] with the name of an lm-eval task or group (`lm_eval ls tasks` "
                "lists them)"
                if ds.task == name
                else f"correct dataset.{name}.task"
            )
            problems.append(
                f"dataset '{name}': lm-eval has no task or group named {ds.task!r} (searched "
                f"lm-eval's built-ins and {', '.join(str(f) for f in folders)})."
                f"{did_you_mean(ds.task, manager.all_tasks)}{unreadable} Fix: {fix}, fix the "
                "task file, or add the folder holding its YAML to task_paths."
            )
            continue
        entry = manager.task_index[ds.task]
        builtin = _is_builtin(entry.yaml_path)
        unknown = unknown_metrics(entry.cfg)
        if unknown:
            problems.append(unknown_metric_problem(name, ds.task, entry.yaml_path, unknown))
            continue
        try:
            with hub_snapshots_offline(run.offline):
                loaded = with_metadata(manager, task_metadata(run, ds)).load([ds.task])
        except Exception as err:  # any loader failure becomes this dataset's explained error
            problems.append(_explain_load_failure(name, ds.task, entry, builtin, run.offline, err))
            continue
        # A tag names several tasks at once: keep them all.
        task = (
            loaded["groups"].get(ds.task)
            or loaded["tasks"].get(ds.task)
            or list(loaded["tasks"].values())
        )
        shortfall = (
            fewshot_problem(name, ds, task)
            or unsafe_code_problem(name, run, task)
            or thinking_problem(name, run, task)
        )
        if shortfall:
            problems.append(shortfall)
            continue
        prepared[name] = PreparedDataset(name, ds, task, builtin, manager)
    if problems:
        noun = "dataset" if len(problems) == 1 else "datasets"
        raise TaskError(
            f"{len(problems)} {noun} cannot be evaluated:\n"
            + "\n".join(f"  - {p}" for p in problems)
        )
    return prepared


def task_metadata(run: RunConfig, ds: DatasetConfig) -> dict[str, Any] | None:
    """The metadata a dataset's tasks are built with (``dataset.<name>.metadata``), plus the
    model's ``pretrained`` where neither it nor ``tokenizer`` is given, as lm-eval's CLI merges
    its ``--model_args`` in (tasks such as RULER load the tokenizer named there)."""
    if ds.metadata is None:
        return None
    metadata = dict(settings_for(run, ds).metadata or {})
    if "pretrained" not in metadata and "tokenizer" not in metadata:
        metadata["pretrained"] = run.model.pretrained
    return metadata


def with_metadata(manager: Any, metadata: dict[str, Any] | None) -> Any:
    """``manager`` building tasks with ``metadata`` merged into each task's own (lm-eval's
    ``TaskManager(metadata=...)``), without indexing the task folders again."""
    if not metadata:
        return manager
    import copy

    from lm_eval.tasks._factory import TaskFactory

    clone = copy.copy(manager)
    clone.metadata = metadata
    clone._factory = TaskFactory(meta=metadata)  # what TaskManager.__init__ builds from it
    return clone


def unsafe_code_problem(name: str, run: RunConfig, task: Any) -> str | None:
    """A task that runs the model's code (``unsafe_code: true``) without the run's consent:
    lm-eval would raise only after the model is loaded."""
    if run.confirm_run_unsafe_code:
        return None
    unsafe = [
        str(getattr(t, "task_name", t))
        for t in leaf_tasks(task)
        if getattr(t, "UNSAFE_CODE", False)
    ]
    if not unsafe:
        return None
    return (
        f"dataset '{name}': task(s) {', '.join(unsafe)} execute the code the model generates "
        "on this machine (unsafe_code: true in the task). Fix: confirm_run_unsafe_code=true, "
        "preferably in a sandbox (a container without network or secrets)."
    )


def thinking_problem(name: str, run: RunConfig, task: Any) -> str | None:
    """Thinking on with a task scored by log-likelihood: lm-eval's models refuse it only when
    the requests arrive, after the load."""
    if not run.enable_thinking:
        return None
    scored = ("loglikelihood", "loglikelihood_rolling", "multiple_choice")
    leaves = [t for t in leaf_tasks(task) if getattr(t, "OUTPUT_TYPE", None) in scored]
    if not leaves:
        return None
    names = ", ".join(str(getattr(t, "task_name", t)) for t in leaves)
    return (
        f"dataset '{name}': enable_thinking=true, but {names} score(s) answers by log-likelihood, "
        "which thinking cannot serve (lm-eval refuses it). Fix: enable_thinking=false for this "
        "run, or evaluate those tasks in a run of their own."
    )


def unknown_metrics(cfg: dict[str, Any] | None) -> list[str]:
    """The metric names of a task's ``metric_list`` that lm-eval's metric registry lacks.

    lm-eval looks such a name up in Hugging Face's ``evaluate`` (online: 12 s offline before it
    gives up) and then runs the task with no metric at all. Names under ``hf_evaluate: true``,
    functions, and tasks with their own ``process_results`` (which name their metrics freely)
    are not checked.
    """
    from lm_eval.api import metrics as _registers_metrics  # noqa: F401 (fills the registry)
    from lm_eval.api.registry import metric_registry

    if not isinstance(cfg, dict) or cfg.get("process_results") is not None:
        return []
    unknown = []
    for item in cfg.get("metric_list") or []:
        if not isinstance(item, dict) or item.get("hf_evaluate") is True:
            continue
        metric = item.get("metric")
        if isinstance(metric, str) and metric not in metric_registry:
            unknown.append(metric)
    return unknown


def unknown_metric_problem(name: str, task: str, yaml_path: Any, unknown: list[str]) -> str:
    from lm_eval.api.registry import metric_registry

    known = sorted(metric_registry)
    named = ", ".join(repr(m) for m in unknown)
    hints = "".join(did_you_mean(m, known) for m in unknown)
    return (
        f"dataset '{name}': task {task!r} ({yaml_path}) names metric {named}, which lm-eval's "
        f"metric registry does not know (it would run with no metric at all).{hints} Fix: "
        f"correct metric_list in the task file (known: {', '.join(known[:12])}, ...), or mark "
        "a Hugging Face evaluate metric with hf_evaluate: true."
    )


def _is_builtin(yaml_path: Path | None) -> bool:
    import lm_eval.tasks

    if yaml_path is None:
        return False
    return Path(lm_eval.tasks.__file__).parent in Path(yaml_path).resolve().parents


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}".rstrip(": ")


def _explain_load_failure(
    name: str, task: str, entry: Any, builtin: bool, offline: bool, err: BaseException
) -> str:
    if builtin:
        hub = (entry.cfg or {}).get("dataset_path")
        if offline:  # a repo the check before found here, yet not loadable from it
            fix = f"`{download_command(hub)}` where the hub is reachable" if hub else "fetch it"
            return (
                f"dataset '{name}': lm-eval task {task!r} could not load "
                f"{hub or 'its Hugging Face dataset'!r} offline ({_first_line(err)}). Fix: {fix} "
                "(it fills the hub cache this run reads), or offline=false where the hub is "
                "reachable."
            )
        hub = hub or "its Hugging Face dataset"
        return (
            f"dataset '{name}': lm-eval task {task!r} could not load {hub!r} "
            f"({_first_line(err)}). Fix: check network access to the Hugging Face hub."
        )
    return (
        f"dataset '{name}': task {task!r} ({entry.yaml_path}) could not load its data: "
        f"{_first_line(err)}"
    )


def doc_count(dataset: PreparedDataset) -> int:
    """How many documents the dataset evaluates: its tasks' evaluation splits, cut to ``limit``
    (a count, or a fraction of each split, as lm-eval reads it)."""
    total = 0
    limit = dataset.config.limit
    for leaf in leaf_tasks(dataset.task):
        try:
            n = len(leaf.eval_docs)
        except Exception:  # a task without a countable split: count it as one result
            n = 1
        if limit is not None:
            n = min(n, int(limit) if limit >= 1 else max(1, int(n * limit)))
        total += n
    return total


def leaf_tasks(task: Any) -> list[Any]:
    """The single tasks of a task, a group, or a list of them."""
    if isinstance(task, list):
        return [leaf for t in task for leaf in leaf_tasks(t)]
    if hasattr(task, "get_all_tasks"):
        return list(task.get_all_tasks())
    return [task]


def fewshot_problem(name: str, ds: DatasetConfig, task: Any) -> str | None:
    """A few-shot count larger than a task's pool of examples to draw from.

    lm-eval finds out only while building prompts, after the model is loaded, with Python's raw
    "Sample larger than population". When the pool is the evaluated split itself, each prompt
    leaves its own document out, so one more is needed.
    """
    for leaf in leaf_tasks(task):
        config = getattr(leaf, "config", None)
        shots = ds.num_fewshot if ds.num_fewshot is not None else getattr(config, "num_fewshot", 0)
        if not shots or config is None:
            continue
        sampler = getattr(leaf, "sampler", None)
        pool = len(sampler.fewshot_docs()) if sampler is not None else 0
        same_split = getattr(leaf.fewshot_cfg, "split", None) == config.test_split
        needed = shots + 1 if same_split else shots
        if pool < needed:
            usable = max(pool - 1 if same_split else pool, 0)
            where = " (its own test split, less the document being asked)" if same_split else ""
            return (
                f"dataset '{name}': num_fewshot={shots} but task {config.task!r} has {pool} "
                f"few-shot example(s) to draw from{where}. Fix: dataset.{name}.num_fewshot="
                f"{usable} or less, or a task with a larger few-shot split."
            )
    return None
