"""A group's subgroups and subtasks on its dataset's child run: each member's metrics as
``<member>/<metric>`` (MLflow's UI charts each member in a section of its own and compares it
across runs), and the group tree as the ``group_subtasks`` tag, which the report reads back.

The live run and replay both log them here (through ``rundir.track_outcome``).
"""

from __future__ import annotations

import json
import logging

from harness.record.groups import MAX_KEY, member_key
from harness.record.outcome import DatasetOutcome

log = logging.getLogger(__name__)

TREE_TAG = "group_subtasks"
"""The child run's tag holding the group tree as JSON (``{group: [members]}``); past MLflow's
tag length it goes on in ``group_subtasks.2``, ``group_subtasks.3``, ..."""

TAG_PIECE = 8000
"""MLflow's longest tag value (``MAX_TAG_VAL_LENGTH``)."""


def member_metrics(outcome: DatasetOutcome) -> dict[str, float]:
    """Every subgroup's and subtask's metrics, named ``<member>/<metric>``; a name longer than
    MLflow takes is left out with a warning (logging it would turn tracking off)."""
    found: dict[str, float] = {}
    for member, metrics in outcome.subtasks.items():
        for metric, value in metrics.items():
            key = member_key(member, metric)
            if len(key) > MAX_KEY:
                log.warning(
                    "%s: metric %s not logged (over MLflow's %d characters)",
                    outcome.name,
                    key,
                    MAX_KEY,
                )
                continue
            found[key] = value
    return found


def tree_tags(outcome: DatasetOutcome) -> dict[str, str]:
    """The group tree as tags, in pieces MLflow takes; none for a single task."""
    if not outcome.group_subtasks:
        return {}
    text = json.dumps(outcome.group_subtasks, separators=(",", ":"))
    pieces = [text[i : i + TAG_PIECE] for i in range(0, len(text), TAG_PIECE)]
    return {TREE_TAG if i == 0 else f"{TREE_TAG}.{i + 1}": p for i, p in enumerate(pieces)}


def read_tree(tags: dict[str, str]) -> dict[str, list[str]]:
    """The group tree a child run's tags hold (``tree_tags``); empty for a single task or a run
    logged before groups were kept (or with a tag that does not parse)."""
    if TREE_TAG not in tags:
        return {}
    text, n = tags[TREE_TAG], 2
    while f"{TREE_TAG}.{n}" in tags:
        text, n = text + tags[f"{TREE_TAG}.{n}"], n + 1
    try:
        tree = json.loads(text)
    except ValueError:
        return {}
    if not isinstance(tree, dict):
        return {}
    return {str(g): [str(m) for m in ms] for g, ms in tree.items() if isinstance(ms, list)}
