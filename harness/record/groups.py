"""A dataset that is an lm-eval group, whole: its subgroups and subtasks, each with its metrics.

lm-eval's result of a group holds an entry for the group, for every subgroup and for every
subtask under it (``results``), and each group's direct members (``group_subtasks``). The
outcome keeps that part of the result (``DatasetOutcome.group_subtasks`` and ``.subtasks``);
the console, MLflow and the report show it from there. The dataset itself stays one dataset:
one stored result, one journal, one child run, its headline the group's own.

One naming rule for a member's metric wherever it is logged or read back: ``<member>/<metric>``
(``arith_mc/acc``, ``gsm8k/exact_match/strict-match``), in the characters MLflow allows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from harness.record.metrics import metric_items

MLFLOW_UNSAFE = re.compile(r"[^/\w.\- :]")
"""Characters MLflow refuses in a metric name (``mlflow.utils.validation``: alphanumerics,
``_ - . : /`` and spaces pass); lm-eval's filter names may hold others (``maj@64``)."""

MAX_KEY = 250
"""MLflow's longest metric name (``MAX_ENTITY_KEY_LENGTH``)."""


@dataclass(frozen=True)
class Member:
    """One subgroup or subtask of a group, as a table shows it."""

    name: str
    """Its lm-eval name."""
    depth: int
    """1 for a direct member of the dataset's group, 2 for a member of a subgroup, ..."""
    is_group: bool
    """A subgroup (it has members of its own), not a subtask."""
    parent: str
    """The group it is a direct member of."""


def group_tree(result: dict[str, Any], task: str) -> dict[str, list[str]]:
    """The groups under ``task`` (itself and its subgroups, depth-first), each with its direct
    members, as lm-eval's ``group_subtasks`` lists them; empty when ``task`` is no group."""
    listed = result.get("group_subtasks") or {}
    tree: dict[str, list[str]] = {}

    def visit(group: str) -> None:
        if group in tree or not listed.get(group):
            return
        tree[group] = [str(m) for m in listed[group]]
        for member in tree[group]:
            visit(member)

    visit(task)
    return tree


def members(tree: dict[str, list[str]], root: str) -> list[Member]:
    """Every subgroup and subtask under ``root``, depth-first in lm-eval's order; a member
    listed twice (a subtask in two subgroups) is shown once, at its first place."""
    found: list[Member] = []
    seen: set[str] = {root}

    def visit(group: str, depth: int) -> None:
        for name in tree.get(group, []):
            if name in seen:
                continue
            seen.add(name)
            found.append(Member(name, depth, name in tree, group))
            visit(name, depth + 1)

    visit(root, 1)
    return found


def breakdown(
    result: dict[str, Any], task: str
) -> tuple[dict[str, list[str]], dict[str, dict[str, float]]]:
    """The group tree under ``task`` and the metrics of each of its members (named as the
    dataset's own, ``metric_items``); two empty mappings for a single task."""
    tree = group_tree(result, task)
    entries = result.get("results") or {}
    metrics = {m.name: metric_items(dict(entries.get(m.name) or {})) for m in members(tree, task)}
    return tree, metrics


def member_key(member: str, metric: str) -> str:
    """A member's metric as MLflow names it: ``<member>/<metric>``, a character MLflow refuses
    replaced by ``_``."""
    return MLFLOW_UNSAFE.sub("_", f"{member}/{metric}")


def split_metrics(
    metrics: dict[str, float], tree: dict[str, list[str]], root: str
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """A child run's metrics parted into the dataset's own and each member's (by ``member_key``
    prefix), as MLflow returns them: what the report reads back."""
    prefixes = {member_key(m.name, ""): m.name for m in members(tree, root)}
    own: dict[str, float] = {}
    by_member: dict[str, dict[str, float]] = {name: {} for name in prefixes.values()}
    for key, value in metrics.items():
        prefix = next((p for p in prefixes if key.startswith(p)), None)
        if prefix is None:
            own[key] = value
        else:
            by_member[prefixes[prefix]][key.removeprefix(prefix)] = value
    return own, by_member
