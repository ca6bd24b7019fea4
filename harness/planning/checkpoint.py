"""A model's facts read from its own checkpoint files, with no weights loaded and no torch.

The facts that drive the memory plan, the tp rules and the run's identity come from the
checkpoint's ``config.json`` (layers, widths, heads, vocabulary, context window, dtype, experts)
and its safetensors headers (parameter count from tensor shapes). The files are found in a local
folder or in the local Hugging Face cache, whose layout (``models--org--name/refs``,
``snapshots/<commit>/``) is read directly: importing ``huggingface_hub`` alone costs about 0.3 s,
more than half of plan-only mode's budget, so it is imported only to download (``offline=false``).
"""

from __future__ import annotations

import json
import os
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import ConfigError, did_you_mean
from harness.paths import resolve_project_path

CONFIG = "config.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "spiece.model", "vocab.txt")
"""A local checkpoint holds a tokenizer when it has one of these (fast, SentencePiece, BPE,
WordPiece); a training checkpoint saved without its tokenizer fails only at load otherwise."""
SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
BIN_INDEX = "pytorch_model.bin.index.json"
DTYPE_BYTES = {
    "F64": 8,
    "I64": 8,
    "U64": 8,
    "F32": 4,
    "I32": 4,
    "U32": 4,
    "F16": 2,
    "BF16": 2,
    "I16": 2,
    "U16": 2,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "I8": 1,
    "U8": 1,
    "BOOL": 1,
}
"""Bytes per element of each safetensors dtype."""
CONFIG_DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}
CONFIG_DTYPES |= {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "half": "float16"}
_HEX40 = re.compile(r"^[0-9a-f]{40}$")


@dataclass
class Checkpoint:
    """Where a checkpoint's files are on this machine."""

    pretrained: str
    """The hub id or folder as the user gave it."""
    folder: Path
    """The local folder, or the hub cache snapshot, holding its files."""
    commit: str | None = None
    """The hub commit of a cached snapshot; None for a local folder."""

    def file(self, name: str) -> Path | None:
        path = self.folder / name
        return path if path.is_file() else None


@dataclass
class CheckpointFacts:
    """Architecture facts as ``ModelConfig`` names them, and where each came from."""

    facts: dict[str, Any]
    """num_params, num_active_params, num_layers, hidden_size, ..., context_window, dtype."""
    sources: list[str] = field(default_factory=list)
    """One line per file or rule used (``config.json``, safetensors headers, a family default)."""


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache, by the same environment variables the hub client reads."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    hf_home = os.environ.get("HF_HOME") or Path(
        os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface"
    )
    return Path(hf_home).expanduser() / "hub"


def start_dir() -> Path:
    """Where the user stands: the directory the command was started in. Hydra's record of it
    while a Hydra job runs (a job told ``hydra.job.chdir=true`` has moved into its run
    directory), else this process's current directory."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.cwd)
    return Path.cwd()


def is_local(pretrained: str) -> bool:
    """A folder path rather than a hub id (``org/name``), by its shape alone (a folder of a hub
    id's shape that exists here is found by ``harness.planning.location``)."""
    return pretrained.startswith(("/", ".", "~")) or pretrained.count("/") != 1


def cached_snapshot(repo_id: str, revision: str | None) -> Checkpoint | None:
    """The cache snapshot of a hub repository at a revision, if its config.json is cached."""
    repo = hub_cache_dir() / f"models--{repo_id.replace('/', '--')}"
    rev = revision or "main"
    commit = rev if _HEX40.match(rev) else None
    if commit is None:
        ref = repo / "refs" / rev
        if not ref.is_file():
            return None
        commit = ref.read_text().strip()
    snapshot = repo / "snapshots" / commit
    if not (snapshot / CONFIG).is_file():
        return None
    return Checkpoint(repo_id, snapshot, commit)


def fetch_command(repo_id: str, revision: str | None) -> str:
    """The one command that puts a hub model's plannable files in the local cache."""
    rev = f" --revision {revision}" if revision else ""
    return f"hf download {repo_id} {CONFIG} {SAFETENSORS_INDEX}{rev}"


def check_tokenizer(ckpt: Checkpoint) -> None:
    """A local checkpoint folder must hold a tokenizer (a training checkpoint is often saved
    without one); a hub snapshot cached for planning holds only its config, and is not checked.

    Raises:
        ConfigError: no tokenizer file, naming the files to copy.
    """
    if ckpt.commit is not None:
        return
    folder, pretrained = ckpt.folder, ckpt.pretrained
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise ConfigError(
            [
                f"model.pretrained={pretrained!r}: {folder} has a config.json but no "
                f"tokenizer ({', '.join(TOKENIZER_FILES)}), so the model would fail at load. "
                "Fix: copy the tokenizer files of the model it was trained from into it "
                "(tokenizer.save_pretrained(folder) writes tokenizer.json and "
                "tokenizer_config.json), or point model.pretrained at a folder that has them."
            ]
        )


def locate(
    pretrained: str, revision: str | None, offline: bool, typed: str | None = None
) -> Checkpoint:
    """Find a checkpoint's files: a local folder, the hub cache, or (online) the hub.

    Args:
        pretrained: a folder (absolute, or a bundled model's project path) or a hub id, as
            ``harness.planning.location`` resolved it.
        revision: the hub revision, None for the default branch.
        offline: the hub may not be asked.
        typed: ``model.pretrained`` as the user gave it, for the messages (default: ``pretrained``).

    Raises:
        ConfigError: the folder or the cached files are missing, with the fix.
    """
    typed = pretrained if typed is None else typed
    if is_local(pretrained):
        folder = resolve_project_path(os.path.expanduser(pretrained))
        if not (folder / CONFIG).is_file():
            what = (
                "has no config.json"
                if folder.is_dir()
                else "is a file, not a checkpoint folder"
                if folder.exists()
                else "does not exist"
            )
            relative = not os.path.isabs(os.path.expanduser(typed)) and os.path.isabs(pretrained)
            start = f" (a relative path starts at the current directory, {start_dir()})"
            raise ConfigError(
                [
                    f"model.pretrained={typed!r}: {folder} {what}{start if relative else ''}, so "
                    "its facts cannot be read. Fix: point it at a folder saved with "
                    "save_pretrained() (config.json and *.safetensors), or at a hub id like "
                    "org/name."
                ]
            )
        return Checkpoint(typed, folder)
    found = cached_snapshot(pretrained, revision)
    if found is not None:
        return found
    if offline:
        raise ConfigError(
            [
                f"model.pretrained={pretrained!r}: its {CONFIG} (and {SAFETENSORS_INDEX}, or "
                f"{SAFETENSORS}) are not in the local Hugging Face cache ({hub_cache_dir()}), "
                f"nor is there a folder {pretrained} in the current directory ({start_dir()}), "
                f"and offline=true forbids fetching them. Fix: "
                f"`{fetch_command(pretrained, revision)}` (a few kB), or offline=false, or "
                "model.pretrained=<a local folder>."
            ]
        )
    return _download(pretrained, revision)


def _download(repo_id: str, revision: str | None) -> Checkpoint:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    config = Path(hf_hub_download(repo_id, CONFIG, revision=revision))
    for name in (SAFETENSORS_INDEX, BIN_INDEX):
        try:
            hf_hub_download(repo_id, name, revision=revision)
            break
        except EntryNotFoundError:
            continue
    commit = config.parent.name if _HEX40.match(config.parent.name) else None
    return Checkpoint(repo_id, config.parent, commit)


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ConfigError(
            [f"{path}: not readable JSON ({err}). Fix: fetch the file again."]
        ) from err
    if not isinstance(data, dict):
        raise ConfigError([f"{path}: expected a JSON object. Fix: fetch the file again."])
    return data


def safetensors_header(path: Path) -> dict[str, Any]:
    """The JSON header of one safetensors file: tensor names to dtype, shape and offsets."""
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        if length > 100 * 1024**2:
            raise ValueError(f"{path}: header of {length} bytes; not a safetensors file")
        header: dict[str, Any] = json.loads(f.read(length))
    header.pop("__metadata__", None)
    return header


def _numel(shape: list[int]) -> int:
    n = 1
    for dim in shape:
        n *= dim
    return n


def tensor_params(ckpt: Checkpoint) -> tuple[dict[str, int], str] | None:
    """Elements of every tensor, from safetensors headers, when all weight files are here."""
    index = ckpt.file(SAFETENSORS_INDEX)
    if index is not None:
        files = sorted(set(read_json(index).get("weight_map", {}).values()))
    elif ckpt.file(SAFETENSORS) is not None:
        files = [SAFETENSORS]
    else:
        return None
    if not files or any(ckpt.file(name) is None for name in files):
        return None
    counts: dict[str, int] = {}
    for name in files:
        header = safetensors_header(ckpt.folder / name)
        counts.update({t: _numel(info["shape"]) for t, info in header.items()})
    return counts, f"tensor shapes in the headers of {len(files)} safetensors file(s)"


def indexed_params(ckpt: Checkpoint, dtype: str) -> tuple[int, str] | None:
    """Parameters from an index's metadata when the weight files themselves are not here."""
    for name in (SAFETENSORS_INDEX, BIN_INDEX):
        path = ckpt.file(name)
        if path is None:
            continue
        meta = read_json(path).get("metadata") or {}
        if isinstance(meta.get("total_parameters"), int):
            return meta["total_parameters"], f"{name} metadata.total_parameters"
        if isinstance(meta.get("total_size"), int):
            size = {"float32": 4, "bfloat16": 2, "float16": 2}[dtype]
            return (
                meta["total_size"] // size,
                f"{name} metadata.total_size / {size} bytes ({dtype}); fetch the safetensors "
                "headers for an exact count",
            )
    return None


def chat_templates(folder: Path) -> dict[str, str]:
    """The chat templates a tokenizer folder holds, by name (a single one is ``default``):
    ``tokenizer_config.json``'s ``chat_template`` (a string, or a list of ``{name, template}``),
    ``chat_template.jinja``, and ``additional_chat_templates/<name>.jinja`` (transformers 5)."""
    templates: dict[str, str] = {}
    path = folder / "tokenizer_config.json"
    config = read_json(path) if path.is_file() else {}
    given = config.get("chat_template")
    if isinstance(given, str) and given:
        templates["default"] = given
    elif isinstance(given, list):
        templates |= {str(t["name"]): str(t["template"]) for t in given if "name" in t}
    if (folder / "chat_template.jinja").is_file():
        templates["default"] = (folder / "chat_template.jinja").read_text(encoding="utf-8")
    for extra in sorted((folder / "additional_chat_templates").glob("*.jinja")):
        templates[extra.stem] = extra.read_text(encoding="utf-8")
    return templates


def chat_template_problem(folder: Path, wanted: bool | str, typed: str) -> str | None:
    """Why the tokenizer in ``folder`` cannot give the chat template ``wanted`` (True: its own;
    a name: that one of its templates), as lm-eval would find out only after the load; None
    when it can. A folder without tokenizer files (a hub snapshot cached for planning) is not
    judged."""
    if not any((folder / name).is_file() for name in (*TOKENIZER_FILES, "tokenizer_config.json")):
        return None
    templates = chat_templates(folder)
    wanted_shown = str(wanted).lower() if isinstance(wanted, bool) else wanted
    if not templates:
        return (
            f"apply_chat_template={wanted_shown}: model.pretrained={typed!r} has no chat "
            "template (its tokenizer_config.json has no chat_template and there is no "
            "chat_template.jinja): a "
            "base model, not a chat or instruct one. Fix: apply_chat_template=false, or a "
            "checkpoint whose tokenizer has a chat template (an instruct/chat variant)."
        )
    names = sorted(templates)
    if wanted is True and "default" not in templates:
        return (
            f"apply_chat_template=true: model.pretrained={typed!r} has several chat templates "
            f"and none named 'default' ({', '.join(names)}). Fix: apply_chat_template=<name>, "
            f"one of {', '.join(names)}."
        )
    if isinstance(wanted, str) and wanted not in templates:
        # one template: lm-eval warns and applies it anyway, so the run is scored and stored
        # under a name (or a typo of true) that is no template of the checkpoint
        only = " (its only one)" if names == ["default"] else ""
        return (
            f"apply_chat_template={wanted}: model.pretrained={typed!r} has no chat template of "
            f"that name.{did_you_mean(wanted, [*names, 'true'])} Fix: apply_chat_template=true "
            f"for its default{only}, or apply_chat_template=<name>, one of {', '.join(names)}."
        )
    return None


def chat_template_problems(
    model_pretrained: str, revision: str | None, typed: str, wanted: set[Any]
) -> list[str]:
    """``chat_template_problem`` for each template the run's datasets ask of the checkpoint
    (a local folder, or a hub snapshot in the cache with its tokenizer files)."""
    if is_local(model_pretrained):
        folder: Path | None = resolve_project_path(os.path.expanduser(model_pretrained))
    else:
        snapshot = cached_snapshot(model_pretrained, revision)
        folder = snapshot.folder if snapshot is not None else None
    if folder is None or not folder.is_dir():
        return []
    found = (chat_template_problem(folder, w, typed) for w in sorted(wanted, key=str))
    return [problem for problem in found if problem]
