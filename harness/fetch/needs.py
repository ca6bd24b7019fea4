"""What one composed run needs from the hub, and whether this machine holds it: the model's
files (a hub id's snapshot; a local folder needs nothing) and every dataset repo its tasks load
(``evaluation.hub_data``'s resolution, from the task index without building a task)."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path

from harness.config.schema import RunConfig
from harness.evaluation.hub_data import HubData, few, hub_data_of, on_this_machine, run_task_index
from harness.evaluation.tasks import task_folders
from harness.paths import resolve_project_path
from harness.planning.checkpoint import (
    CONFIG,
    SAFETENSORS,
    SAFETENSORS_INDEX,
    TOKENIZER_FILES,
    hub_cache_dir,
    is_local,
)
from harness.planning.location import locate_pretrained

TOKENIZER_ONLY = ("*.json", "tokenizer*")
"""What an endpoint run reads of its model here: config and tokenizer (the weights are served)."""


@dataclass(frozen=True)
class Need:
    """One hub repo a run needs, and how much of it."""

    repo: str
    repo_type: str
    """``model`` or ``dataset``."""
    revision: str | None = None
    include: tuple[str, ...] = ()
    """Glob patterns of the files needed; empty: the whole repo."""
    configs: tuple[str, ...] = ()
    """A dataset's configs the tasks load: fetched alone where the repo's README declares their
    files (``cli.allowed_files``); the printed ``hf download`` line takes the whole repo, whose
    layout is not known before the hub is asked."""

    def command(self) -> str:
        """The ``hf download`` line that puts it in this machine's hub cache."""
        words = ["hf", "download", self.repo]
        if self.repo_type != "model":
            words += ["--repo-type", self.repo_type]
        if self.revision:
            words += ["--revision", self.revision]
        for pattern in self.include:
            words += ["--include", pattern]
        return shlex.join(words)

    def describe(self) -> str:
        what = "model" if self.repo_type == "model" else "dataset"
        named = f" (config(s) {few(list(self.configs))})" if self.configs else ""
        return f"{what} {self.repo}{named}"


@dataclass(frozen=True)
class LocalModel:
    """A model given as a folder: nothing to fetch; ``exists`` says whether it is here."""

    folder: str
    exists: bool


def model_need(run: RunConfig) -> Need | LocalModel:
    """The model's files: a hub id's (the config and tokenizer alone for an endpoint, whose
    weights are served elsewhere), or the local folder a run would load (as the planner finds it:
    a folder here wins over a hub id of its name)."""
    located = locate_pretrained(run.model.pretrained)
    if is_local(located.pretrained):
        folder = resolve_project_path(located.pretrained)
        return LocalModel(str(folder), (folder / CONFIG).is_file())
    include = TOKENIZER_ONLY if run.strategy.engine == "endpoint" else ()
    return Need(located.pretrained, "model", run.model.revision, include)


def dataset_needs(run: RunConfig) -> list[Need]:
    """Each dataset repo the run's tasks load, once, with the configs they name."""
    names = [ds.task for ds in run.dataset.values()]
    index = run_task_index(task_folders(run), names)
    configs: dict[str, list[str]] = {}
    for name in names:
        for data in hub_data_of(name, index):
            listed = configs.setdefault(data.repo, [])
            if data.config and data.config not in listed:
                listed.append(data.config)
    return [Need(repo, "dataset", configs=tuple(c)) for repo, c in configs.items()]


def model_snapshot(need: Need) -> Path | None:
    """The hub cache's snapshot of a model at its revision (``main`` by default)."""
    repo = hub_cache_dir() / f"models--{need.repo.replace('/', '--')}"
    rev = need.revision or "main"
    ref = repo / "refs" / rev
    commit = ref.read_text().strip() if ref.is_file() else rev
    snapshot = repo / "snapshots" / commit
    return snapshot if snapshot.is_dir() else None


def weights_complete(folder: Path) -> bool:
    """Every weight file is there: each shard its index names, or a single file."""
    for index in (SAFETENSORS_INDEX, "pytorch_model.bin.index.json"):
        if (folder / index).is_file():
            shards = set(json.loads((folder / index).read_text()).get("weight_map", {}).values())
            return bool(shards) and all((folder / s).is_file() for s in shards)
    return (folder / SAFETENSORS).is_file() or (folder / "pytorch_model.bin").is_file()


def is_here(need: Need) -> bool:
    """Whether this machine holds what a run needs of it (a planning-only snapshot, config.json
    alone, is not a model: its weights and tokenizer are missing)."""
    if need.repo_type == "dataset":
        return all(on_this_machine(HubData(need.repo, c)) for c in need.configs or (None,))
    snapshot = model_snapshot(need)
    if snapshot is None or not (snapshot / CONFIG).is_file():
        return False
    if not any((snapshot / name).is_file() for name in TOKENIZER_FILES):
        return False
    return bool(need.include) or weights_complete(snapshot)
