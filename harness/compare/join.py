"""Pair two runs' samples on identity, never on position: two records are the same question
only when the task, the task's version, the document id and the prompt the model saw (the hash
of its request arguments) agree. What is not shared is counted by reason."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from harness.compare.samples import Sample

REASONS = {
    "only_in_baseline": "the candidate has no sample of this document (another limit or samples=)",
    "only_in_candidate": "the baseline has no sample of this document (another limit or samples=)",
    "task_version_differs": "the task's version differs (another dataset or task definition)",
    "prompt_differs": "the prompt differs (another few-shot count, chat template, description "
    "or generation settings)",
    "repeated": "the document appears twice in one run's samples",
}
"""Why a sample was left out of a comparison (compare.json's ``excluded`` counts them)."""


@dataclass
class Joined:
    """The samples two runs share, and why the others were left out."""

    pairs: list[tuple[Sample, Sample]] = field(default_factory=list)
    """(baseline, candidate) samples of one question, in the baseline's order."""
    excluded: Counter[str] = field(default_factory=Counter)
    """Documents left out, by reason (``REASONS``)."""
    by_task: dict[str, Counter[str]] = field(default_factory=dict)
    """The same, per lm-eval task (a group's subtasks)."""

    def leave_out(self, task: str, reason: str) -> None:
        """Count one document of ``task`` left out for ``reason``."""
        self.excluded[reason] += 1
        self.by_task.setdefault(task, Counter())[reason] += 1


def join(
    baseline: list[Sample],
    candidate: list[Sample],
    baseline_versions: dict[str, Any],
    candidate_versions: dict[str, Any],
) -> Joined:
    """The pairs of ``baseline`` and ``candidate`` that are the same question (see the module)."""
    joined = Joined()
    theirs: dict[tuple[str, str], Sample] = {}
    for sample in candidate:
        key = (sample.task, repr(sample.doc_id))
        if key in theirs:
            joined.leave_out(sample.task, "repeated")
            continue
        theirs[key] = sample
    seen: set[tuple[str, str]] = set()
    for sample in baseline:
        key = (sample.task, repr(sample.doc_id))
        if key in seen:
            joined.leave_out(sample.task, "repeated")
            continue
        seen.add(key)
        other = theirs.get(key)
        if other is None:
            joined.leave_out(sample.task, "only_in_baseline")
        elif baseline_versions.get(sample.task) != candidate_versions.get(sample.task):
            joined.leave_out(sample.task, "task_version_differs")
        elif sample.prompt != other.prompt:
            joined.leave_out(sample.task, "prompt_differs")
        else:
            joined.pairs.append((sample, other))
    for key, sample in theirs.items():
        if key not in seen:
            joined.leave_out(sample.task, "only_in_candidate")
    return joined
