"""Run directories written the way harness writes them (``RunDirectory.write_result`` and
``write_summary``), from per-document scores a test chooses: the fast tests' runs."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.record.outcome import DatasetOutcome
from harness.record.rundir import RunDirectory
from harness.record.summary import RunSummary

CHOICES = ["1", "2", "3", "4"]


@dataclass
class Task:
    """One lm-eval task's documents in a synthetic run: multiple choice, ``acc`` per doc."""

    name: str
    scores: dict[int, float]
    """doc_id -> acc (0 or 1)."""
    version: float = 1.0
    shots: int = 0
    """Few-shot examples before each question (changes the prompt)."""
    metric: str = "acc"


def record(task: Task, doc_id: int, score: float) -> dict[str, Any]:
    """lm-eval's sample record of one multiple-choice document (as its evaluator builds it)."""
    shots = "".join(f"{i}+{i}={2 * i}\n" for i in range(task.shots))
    context = f"{shots}{task.name} q{doc_id}="
    target = doc_id % 4
    best = target if score else (target + 1) % 4
    lls = [[-1.0 if i == best else -5.0, i == best] for i in range(4)]
    return {
        "doc_id": doc_id, "doc": {"q": doc_id}, "target": target,
        "arguments": [[context, c] for c in CHOICES],
        "resps": [[x] for x in lls], "filtered_resps": lls, "filter": "none",
        "metrics": [task.metric], "doc_hash": "x", "prompt_hash": "y", "target_hash": "z",
        task.metric: float(score),
    }  # fmt: skip


@dataclass
class Dataset:
    """A dataset of a synthetic run: one task, or a group of tasks."""

    name: str
    tasks: list[Task]
    group: str | None = None
    """The group's name (the dataset's task) when it is one."""
    weight_by_size: bool = True
    tokens_per_s: float = 100.0
    extra_results: dict[str, Any] = field(default_factory=dict)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def result_of(dataset: Dataset) -> dict[str, Any]:
    """lm-eval's result of the dataset (a group's figure aggregated as lm-eval does)."""
    results: dict[str, Any] = {}
    sizes: dict[str, int] = {}
    for task in dataset.tasks:
        value = _mean(list(task.scores.values()))
        results[task.name] = {"alias": task.name, f"{task.metric},none": value}
        sizes[task.name] = len(task.scores)
    subtasks: dict[str, list[str]] = {t.name: [] for t in dataset.tasks}
    versions: dict[str, Any] = {t.name: t.version for t in dataset.tasks}
    if dataset.group:
        metric = dataset.tasks[0].metric
        values = [results[t.name][f"{metric},none"] for t in dataset.tasks]
        weights = [sizes[t.name] if dataset.weight_by_size else 1 for t in dataset.tasks]
        figure = sum(v * w for v, w in zip(values, weights, strict=True)) / sum(weights)
        results = {dataset.group: {"alias": dataset.group, f"{metric},none": figure}, **results}
        subtasks = {dataset.group: [t.name for t in dataset.tasks], **subtasks}
        versions[dataset.group] = 1.0
    return {
        "results": results,
        "group_subtasks": subtasks,
        "versions": versions,
        "n-samples": {k: {"original": 100, "effective": v} for k, v in sizes.items()},
        "higher_is_better": {t.name: {t.metric: True} for t in dataset.tasks},
        **dataset.extra_results,
    }


def write_run(root: Path, datasets: list[Dataset], model: str = "tiny_char") -> Path:
    """A finished run directory of ``datasets`` at ``root``."""
    run_dir = RunDirectory(root)
    outcomes = {}
    for dataset in datasets:
        result = result_of(dataset)
        result["samples"] = {
            t.name: [record(t, doc, score) for doc, score in sorted(t.scores.items())]
            for t in dataset.tasks
        }
        task = dataset.group or dataset.tasks[0].name
        result_file, samples_file = run_dir.write_result(dataset.name, result)
        outcomes[dataset.name] = DatasetOutcome(
            name=dataset.name, task=task, tokens_per_s=dataset.tokens_per_s,
            result_file=str(result_file), samples_file=str(samples_file),
        )  # fmt: skip
    summary = RunSummary(
        model=model, strategy="single", run_dir=str(root), load_time_s=2.0,
        engine={"pretrained": f"/models/{model}"}, datasets=outcomes,
    )  # fmt: skip
    run_dir.write_summary(summary)
    return root
