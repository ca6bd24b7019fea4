"""``dataset.<name>.samples`` against a task's documents, where plan-only can count them cheaply.

A run counts a task's documents once lm-eval has built it (``runner/opening.sample_problems``),
before the model loads. Plan-only builds no task (it imports no lm-eval and answers in under a
second), so it counts only what a task's YAML names plainly: lm-eval's offline local form,
``dataset_path: json`` (or ``csv``) with ``dataset_kwargs.data_files`` giving the evaluated split
a local file (one document a non-empty line; a CSV's header line is not one). Anything else (a
custom loader, a hub dataset, an ``include`` chain) is said to be unchecked, not guessed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.config.schema import RunConfig

COUNTED_FORMATS = ("json", "csv")


def read_task_yaml(text: str) -> Any:
    """A task YAML's content, lm-eval's ``!function`` tags read as None (nothing imported)."""
    import yaml

    class Loader(yaml.SafeLoader):
        """SafeLoader that reads any ``!tag`` as None."""

    Loader.add_multi_constructor("!", lambda loader, suffix, node: None)
    return yaml.load(text, Loader=Loader)  # a SafeLoader subclass


def task_yaml(task: str, folders: list[Path]) -> tuple[Path, dict[str, Any]] | None:
    """The first YAML under ``folders`` whose ``task:`` is ``task``, with its content."""
    line = f"task: {task}"
    for folder in folders:
        for path in sorted(folder.rglob("*.yaml")) if folder.is_dir() else []:
            try:
                text = path.read_text(encoding="utf-8")
            except OSError:
                continue
            if not any(raw.strip() == line for raw in text.splitlines()):
                continue
            try:
                content = read_task_yaml(text)
            except Exception:  # lm-eval names a YAML it cannot read; here: not counted
                return None
            return (path, content) if isinstance(content, dict) else None
    return None


def split_file(path: Path, config: dict[str, Any]) -> Path | None:
    """The local file of the split lm-eval evaluates (``test_split``, else
    ``validation_split``), for a ``json``/``csv`` dataset given by ``data_files``."""
    if config.get("dataset_path") not in COUNTED_FORMATS or config.get("custom_dataset"):
        return None
    split = config.get("test_split") or config.get("validation_split")
    files = (config.get("dataset_kwargs") or {}).get("data_files")
    if not split or not isinstance(files, dict) or not isinstance(files.get(split), str):
        return None
    file = Path(files[split]).expanduser()
    if not file.is_absolute():  # lm-eval hands it to datasets as written: the current directory
        file = Path.cwd() / file
    return file if file.is_file() else None


def document_count(task: str, folders: list[Path]) -> int | None:
    """How many documents ``task`` evaluates, counted from its local data file; None where
    that cannot be done without lm-eval."""
    found = task_yaml(task, folders)
    if found is None:
        return None
    path, config = found
    file = split_file(path, config)
    if file is None:
        return None
    with file.open("rb") as lines:
        count = sum(1 for raw in lines if raw.strip())
    return count - 1 if config["dataset_path"] == "csv" else count


def plan_only_sample_check(run: RunConfig) -> tuple[list[str], list[str]]:
    """Plan-only's check of every ``samples``: the problems of indices past a counted task's
    documents, and a note for each dataset whose documents plan-only cannot count."""
    problems: list[str] = []
    notes: list[str] = []
    folders: list[Path] | None = None
    for name, ds in run.dataset.items():
        if not ds.samples:
            continue
        if folders is None:  # imported only when a dataset picks samples
            from harness.evaluation.tasks import task_folders

            folders = task_folders(run)
        count = document_count(ds.task, folders)
        if count is None:
            notes.append(
                f"dataset.{name}.samples not checked against the documents of task {ds.task!r}: "
                "plan-only does not build lm-eval's task (a run checks it before the model "
                "loads)."
            )
            continue
        outside = sorted({int(i) for i in ds.samples if int(i) >= count})
        if outside:
            problems.append(
                f"dataset.{name}.samples={list(ds.samples)}: index(es) {outside} outside task "
                f"{ds.task!r}, which has {count} documents (0 to {count - 1}). Fix: "
                f"dataset.{name}.samples with indices below {count}."
            )
    return problems, notes
