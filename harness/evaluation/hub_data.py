"""A task's Hugging Face datasets on a node without the hub: which dataset repos a task (or a
whole group) needs, whether this machine holds each one, the command that fetches it, and
loading it from the hub snapshot that command leaves.

A dataset repo counts as here when `datasets` has it in its own arrow cache (a run with the hub
reachable filled it) or when ``hf download <repo> --repo-type dataset`` left a snapshot of it in
the hub cache (``HF_HUB_CACHE``, ``HF_HOME/hub``): `datasets` 5.2 offline reads only the first,
so :func:`hub_snapshots_offline` loads the second from the snapshot's own files (parquet or JSON
and the README's ``configs`` block), with lm-eval's task definition unchanged.

Everything here reads the task index and the disk only: no task is built, no data loaded, and
lm-eval's 14,685 built-in task configs are not indexed; a name outside the harness's task folders
is found by a text search of lm-eval's task files (:func:`builtin_folders`).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

PACKAGED_BUILDERS = frozenset(
    {"json", "csv", "parquet", "text", "arrow", "pandas", "xml", "sql", "generator", "cache"}
    | {"imagefolder", "audiofolder", "videofolder", "pdffolder", "niftifolder", "webdataset"}
)
"""``dataset_path`` values that name one of `datasets`' own loaders (local files), not a repo."""


@dataclass(frozen=True)
class HubData:
    """One dataset a task loads from the hub: ``load_dataset(repo, config)``."""

    repo: str
    config: str | None

    def describe(self) -> str:
        return self.repo if self.config is None else f"{self.repo} (config {self.config})"


def download_command(repo: str) -> str:
    """The command that puts a dataset repo where an offline run finds it (a login node's)."""
    return f"hf download {repo} --repo-type dataset"


def is_hub_repo(path: Any) -> bool:
    """Whether a task's ``dataset_path`` names a hub repo (not a loader, not a local folder)."""
    if not isinstance(path, str) or not path or path in PACKAGED_BUILDERS:
        return False
    return not path.startswith((".", "/", "~")) and not Path(path).exists()


def hub_data_of(name: str, index: dict[str, Any], seen: set[str] | None = None) -> list[HubData]:
    """The hub datasets a task, group or tag of ``index`` (lm-eval's task index: name ->
    Entry) loads, each once, in order; what the index cannot tell (a Python task, a name it
    lacks) adds nothing."""
    seen = set() if seen is None else seen
    if name in seen or name not in index:
        return []
    seen.add(name)
    entry = index[name]
    kind = entry.kind.name
    if kind == "TAG":
        return _unique([d for task in sorted(entry.tags) for d in hub_data_of(task, index, seen)])
    cfg = entry.cfg or {}
    if kind == "GROUP":
        return _unique([d for item in cfg.get("task") or [] for d in _item(item, index, seen)])
    return _of_config(cfg)


def _item(item: Any, index: dict[str, Any], seen: set[str]) -> list[HubData]:
    """One member of a group's ``task`` list: a name, or an inline config (a task, a group, or
    a name with overrides)."""
    if isinstance(item, str):
        return hub_data_of(item, index, seen)
    if not isinstance(item, dict):
        return []
    if "dataset_path" in item:
        return _of_config(item)
    if "group" in item:
        return _unique([d for sub in item.get("task") or [] for d in _item(sub, index, seen)])
    task = item.get("task")
    return hub_data_of(task, index, seen) if isinstance(task, str) else []


def _of_config(cfg: dict[str, Any]) -> list[HubData]:
    path = cfg.get("dataset_path")
    if cfg.get("custom_dataset") is not None or not is_hub_repo(path):
        return []
    config = cfg.get("dataset_name")
    return [HubData(str(path), str(config) if config is not None else None)]


def _unique(items: list[HubData]) -> list[HubData]:
    return list(dict.fromkeys(items))


# ---- where this machine keeps them ------------------------------------------------------------


def hf_home() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")) / "huggingface"
    return Path(os.environ.get("HF_HOME", str(default))).expanduser()


def datasets_cache() -> Path:
    """`datasets`' arrow cache: its ``config.HF_DATASETS_CACHE`` (read when it was imported),
    or, before it is, what that will be (importing it costs a second)."""
    import sys

    config = sys.modules.get("datasets.config")
    if config is not None:
        return Path(config.HF_DATASETS_CACHE).expanduser()
    return Path(os.environ.get("HF_DATASETS_CACHE", str(hf_home() / "datasets"))).expanduser()


def hub_cache() -> Path:
    """The hub's snapshot cache (``huggingface_hub.constants.HF_HUB_CACHE``)."""
    cache = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    return Path(cache).expanduser() if cache else hf_home() / "hub"


def _snake(name: str) -> str:
    """`datasets.naming.camelcase_to_snakecase`: how the arrow cache names a dataset's folder."""
    name = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", name)
    return re.sub(r"([a-z\d])([A-Z])", r"\1_\2", name).lower()


def in_arrow_cache(data: HubData) -> bool:
    """Whether `datasets` offline finds it: ``<cache>/<org>___<name>/<config>/<version>/<hash>``
    (what its ``CachedDatasetModuleFactory`` globs for; any config when none is named)."""
    parts = data.repo.split("/")
    parts[-1] = _snake(parts[-1])
    root = datasets_cache() / "___".join(parts)
    config = data.config or "*"
    return any(p.is_dir() for p in root.glob(f"{config}/*/*"))


def hub_snapshot(repo: str) -> Path | None:
    """The snapshot folder ``hf download <repo> --repo-type dataset`` left: its ``main`` ref's
    commit (or the only snapshot there is); None when there is none."""
    folder = hub_cache() / ("datasets--" + repo.replace("/", "--"))
    ref = folder / "refs" / "main"
    if ref.is_file():
        snapshot = folder / "snapshots" / ref.read_text().strip()
        if snapshot.is_dir():
            return snapshot
    snapshots = sorted(folder.glob("snapshots/*"))
    return snapshots[0] if len(snapshots) == 1 and snapshots[0].is_dir() else None


def snapshot_configs(snapshot: Path) -> dict[str, list[str]] | None:
    """The data files (path patterns, relative to the snapshot) of each config the snapshot's
    README ``configs`` block declares; None without such a block."""
    import yaml

    try:
        text = (snapshot / "README.md").read_text(encoding="utf-8")
    except OSError:
        return None
    parts = text.split("---", 2) if text.startswith("---") else []
    try:
        meta = yaml.safe_load(parts[1]) if len(parts) == 3 else None
    except yaml.YAMLError:
        return None
    configs = meta.get("configs") if isinstance(meta, dict) else None
    if not isinstance(configs, list):
        return None
    declared = {}
    for config in configs:
        if isinstance(config, dict) and "config_name" in config:
            declared[str(config["config_name"])] = _patterns(config.get("data_files"))
    return declared


def _patterns(files: Any) -> list[str]:
    """A config's ``data_files``: a path, a list of paths, or splits with their path(s)."""
    if isinstance(files, str):
        return [files]
    if isinstance(files, dict):
        return [p for value in files.values() for p in _patterns(value)]
    if isinstance(files, list):
        return [
            p
            for item in files
            for p in _patterns(item.get("path") if isinstance(item, dict) else item)
        ]
    return []


def config_in_snapshot(snapshot: Path, config: str | None) -> bool:
    """Whether the snapshot holds a config's files: each pattern its README declares for it
    matches a file (a snapshot fetched for other configs may lack them); where the README does
    not say, the snapshot is taken as whole."""
    declared = snapshot_configs(snapshot)
    if declared is None or config is None or config not in declared:
        return True
    return all(any(snapshot.glob(pattern)) for pattern in declared[config])


def on_this_machine(data: HubData) -> bool:
    if in_arrow_cache(data):
        return True
    snapshot = hub_snapshot(data.repo)
    return snapshot is not None and config_in_snapshot(snapshot, data.config)


# ---- finding a built-in task without indexing them all ---------------------------------------


def lm_eval_tasks_root() -> Path:
    """lm-eval's built-in task folder, found without importing ``lm_eval.tasks`` (whose
    ``__init__`` imports its task manager: `datasets`, pandas, jinja2, about 2 s)."""
    import importlib.util

    spec = importlib.util.find_spec("lm_eval")
    if spec is None or spec.origin is None:
        raise ImportError("lm-eval is not installed")
    return Path(spec.origin).parent / "tasks"


def _yaml_files(folder: Path) -> Iterator[Path]:
    for where, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if d not in ("__pycache__", ".ipynb_checkpoints")]
        for name in files:
            if name.endswith(".yaml"):
                yield Path(where, name)


def builtin_folders(names: list[str]) -> list[Path]:
    """The folders of lm-eval's task tree whose YAML defines one of ``names`` as a task, group
    or tag (a text search, against 10 s or more to index every config); where none defines it,
    the top folders of those that list it (a tag given as a list). A group's members are found
    where they are defined beside it (as lm-eval's groups are laid out); one defined elsewhere
    is not seen, and is then checked only when its task is built.

    The top folders named like a wanted name (``mmlu_pro/`` for mmlu_pro; lm-eval's layout) are
    searched first; the whole tree (about 14,000 files) only for names not defined there."""
    root = lm_eval_tasks_root()
    tops = sorted({root / n.split("_")[0] for n in names} | {root / n for n in names})
    tops = [t for t in tops if t.is_dir()]
    first = search_task_files(tops, names)
    rest = [n for n in names if n not in first.defined]
    if not rest:
        return sorted(set(first.defining))
    whole = search_task_files([root], rest)
    return sorted(set(first.defining + whole.defining) or set(whole.listing))


@dataclass
class TaskFiles:
    defining: list[Path]
    listing: list[Path]
    defined: set[str]


def search_task_files(folders: list[Path], names: list[str]) -> TaskFiles:
    """The YAML files under ``folders`` that define one of ``names`` (their folders, and the
    names found defined) or list one (their top folders)."""
    root = lm_eval_tasks_root()
    alternatives = "|".join(re.escape(n) for n in names)
    value = rf"['\"]?({alternatives})['\"]?\s*$"
    defines = re.compile(rf"^\s*(?:task|group|tag)\s*:\s*{value}", re.MULTILINE)
    lists = re.compile(rf"^\s*-\s*{value}", re.MULTILINE)
    needles = [n.encode() for n in names]
    found = TaskFiles([], [], set())
    for folder in folders:
        for path in _yaml_files(folder):
            try:
                raw = path.read_bytes()
            except OSError:
                continue
            if not any(n in raw for n in needles):
                continue
            text = raw.decode("utf-8", errors="replace")
            defined = {m.group(1) for m in defines.finditer(text)}
            if defined:
                found.defining.append(path.parent)
                found.defined |= defined
            elif lists.search(text):
                found.listing.append(root / path.relative_to(root).parts[0])
    return found


def _light_index_module() -> Any:
    """``lm_eval.tasks._index`` (lm-eval's task index, and its YAML loader: PyYAML only)
    without running ``lm_eval/tasks/__init__.py``: the package stands in as a bare module while
    they load, and all three are forgotten after, so a later ``import lm_eval.tasks`` is
    lm-eval's own. Where lm-eval's tasks are imported already, theirs."""
    import importlib
    import sys
    import types

    if "lm_eval.tasks" in sys.modules:
        return importlib.import_module("lm_eval.tasks._index")
    import lm_eval  # its __init__ is light: lm-eval's evaluator loads lazily

    package = types.ModuleType("lm_eval.tasks")
    package.__path__ = [str(lm_eval_tasks_root())]
    sys.modules["lm_eval.tasks"] = package
    try:
        return importlib.import_module("lm_eval.tasks._index")
    finally:
        for name in ("lm_eval.tasks._index", "lm_eval.tasks._yaml_loader", "lm_eval.tasks"):
            sys.modules.pop(name, None)
        assert lm_eval


def run_task_index(folders: list[Path], names: list[str]) -> dict[str, Any]:
    """lm-eval's task index over ``folders`` (the run's task folders) plus the built-in
    folders that define one of ``names`` (``builtin_folders``): enough to resolve each name's
    hub data, without indexing every built-in or importing lm-eval's task manager (its index
    is the same ``TaskIndex.build``, whose entries are read here by their fields alone)."""
    index = _light_index_module().TaskIndex
    ours = index.build([Path(f) for f in folders])
    absent = [n for n in names if n not in ours]
    builtins = index.build(builtin_folders(absent)) if absent else {}
    return {**builtins, **ours}


# ---- loading from a snapshot -----------------------------------------------------------------


@contextmanager
def hub_snapshots_offline(offline: bool) -> Iterator[None]:
    """While in it, a `datasets.load_dataset` of a hub repo that the arrow cache lacks but a hub
    snapshot holds loads the snapshot's folder instead (the same files the hub serves, read by
    the same config from its README), so an offline run can use what ``hf download`` fetched.
    Only offline (``offline=true``): online, `datasets` fetches as it always does."""
    if not offline:
        yield
        return
    import datasets

    original = datasets.load_dataset

    def load_dataset(path: Any, name: Any = None, *args: Any, **kwargs: Any) -> Any:
        if is_hub_repo(path) and not in_arrow_cache(HubData(path, name)):
            snapshot = hub_snapshot(path)
            if snapshot is not None:
                log.info("loading %s from its hub snapshot %s (offline)", path, snapshot)
                return original(str(snapshot), name, *args, **kwargs)
        return original(path, name, *args, **kwargs)

    datasets.load_dataset = load_dataset
    try:
        yield
    finally:
        datasets.load_dataset = original


# ---- what an offline run lacks ---------------------------------------------------------------


def missing_hub_data(wanted: dict[str, str], index: dict[str, Any]) -> dict[str, list[HubData]]:
    """For each dataset of the run (its key -> its task name) whose task ``index`` knows, the
    hub datasets it needs that are not on this machine; datasets lacking none are left out."""
    missing = {}
    for key, task in wanted.items():
        lacking = [d for d in hub_data_of(task, index) if not on_this_machine(d)]
        if lacking:
            missing[key] = lacking
    return missing


def missing_data_problem(key: str, task: str, lacking: list[HubData]) -> str:
    """One dataset's refusal: every repo (and config) it lacks, and the command for each."""
    repos = list(dict.fromkeys(d.repo for d in lacking))
    configs = {r: [d.config for d in lacking if d.repo == r and d.config] for r in repos}
    named = "; ".join(r + (f" (config(s) {few(configs[r])})" if configs[r] else "") for r in repos)
    commands = "; ".join(f"`{download_command(r)}`" for r in repos)
    return (
        f"dataset '{key}': lm-eval task {task!r} needs the Hugging Face dataset(s) {named}, "
        f"which are neither in the datasets cache ({datasets_cache()}) nor a hub snapshot in "
        f"{hub_cache()}, and offline=true forbids downloading them. Fix: where the hub is "
        f"reachable (a login node, with the same HF_HOME), run {commands}; then run again "
        "here (the snapshot is read offline). Or offline=false where the hub is reachable."
    )


def few(names: list[str], shown: int = 4) -> str:
    more = f", ... ({len(names)} in all)" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more
