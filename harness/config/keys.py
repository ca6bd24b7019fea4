"""Every setting must be one the schema knows: ``+strategy.batchsize=8`` is refused, not ignored.

Hydra refuses an unknown key given plainly (``strategy.batchsize=8``), but its ``+``/``++``
prefixes add keys that ``OmegaConf.to_object`` then drops without a word: the run goes on with
the default while config.yaml records the value. Both the command line (before Hydra) and the
composed config (config files on a user's search path too) are checked against the dataclasses.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Iterator, Sequence
from functools import cache
from typing import Any

from harness.config.schema import RunConfig
from harness.errors import did_you_mean

GROUP_KEYS = ("model", "strategy", "tier", "dataset", "tracking")


@cache
def _fields(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _is_named_map(hint: Any) -> Any:
    """The value class of ``dict[str, SomeDataclass]`` (datasets by name), else None."""
    if typing.get_origin(hint) is dict:
        value = typing.get_args(hint)[1]
        return value if dataclasses.is_dataclass(value) else None
    return None


def _is_free_mapping(hint: Any) -> bool:
    """A field whose keys are the user's own (``gen_kwargs``, ``metadata``): ``Any`` or a
    ``dict`` of plain values, optional or not."""
    if hint is Any:
        return True
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and len(args) == 1:
        hint = args[0]
    return typing.get_origin(hint) is dict and _is_named_map(hint) is None


def key_problem(key: str, shown: str | None = None) -> str | None:
    """Why the dotted ``key`` is not a setting of the run, with "Did you mean"; None if it is."""
    cls: Any = RunConfig
    parts = key.split(".")
    where: list[str] = []
    i = 0
    while i < len(parts):
        fields = _fields(cls)
        part = parts[i]
        if part not in fields:
            parent = ".".join(where) or "the run"
            names = sorted(fields)
            return (
                f"{shown or key}: {part!r} is not a setting of {parent}."
                f"{did_you_mean(part, names)} Settings of {parent}: {', '.join(names)}. "
                "Fix: correct the key; keys cannot be added, with or without '+'."
            )
        hint = fields[part]
        where.append(part)
        i += 1
        named = _is_named_map(hint)
        if named is not None and i < len(parts):  # dataset.<any name>.<field>
            where.append(parts[i])
            cls, i = named, i + 1
        elif dataclasses.is_dataclass(hint):
            cls = hint
        elif _is_free_mapping(hint):  # its keys are the user's (lm-eval's gen_kwargs, ...)
            return None
        elif i < len(parts):
            return (
                f"{shown or key}: {'.'.join(where)} is a single value, it has no "
                f"{'.'.join(parts[i:])!r}. Fix: set {'.'.join(where)}=<value>."
            )
    return None


def argv_key_problems(argv: Sequence[str]) -> list[str]:
    """Unknown keys in ``key=value`` overrides, whatever their prefix (``+``, ``++``, ``~``)."""
    problems = []
    for arg in argv:
        if arg.startswith("-") or ("=" not in arg and not arg.startswith("~")):
            continue
        key = arg.lstrip("+~").split("=", 1)[0]
        if key in GROUP_KEYS or key.startswith("hydra") or "/" in key or not key:
            continue
        problem = key_problem(key, shown=arg)
        if problem:
            problems.append(problem)
    return problems


def _keys(node: Any, prefix: str) -> Iterator[str]:
    from omegaconf import DictConfig

    if not isinstance(node, DictConfig) or node._is_none() or node._is_missing():
        return
    for key in node:
        path = f"{prefix}{key!s}"
        yield path
        child = node._get_node(key)
        if isinstance(child, DictConfig):
            yield from _keys(child, f"{path}.")


def composed_key_problems(cfg: Any) -> list[str]:
    """Unknown keys anywhere in a composed config (the ``hydra`` node aside)."""
    problems: list[str] = []
    bad: list[str] = []
    for path in _keys(cfg, ""):
        if path.split(".")[0] == "hydra" or any(path.startswith(f"{b}.") for b in bad):
            continue
        problem = key_problem(path)
        if problem:
            bad.append(path)
            problems.append(problem)
    return problems
