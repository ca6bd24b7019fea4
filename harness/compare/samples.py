"""One dataset's per-sample records as a run recorded them (``samples/<dataset>.jsonl.gz``, one
lm-eval sample record a line with its ``task``), reduced to what a comparison needs: the
identity of the question, the per-sample value of a metric, and what to show of it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.record.rundir import read_sample_records
from harness.record.sample_identity import arguments_hash

EXCERPT = 160
"""Characters of a prompt or an answer a flipped sample shows (the prompt's end: the question
comes after any few-shot examples)."""


class CompareError(HarnessError):
    """Two runs cannot be compared as asked: a run not found, no samples, nothing shared."""


@dataclass(frozen=True)
class Sample:
    """One document of one task, as one run answered it."""

    task: str
    """The lm-eval task (a subtask's name for a group)."""
    doc_id: Any
    """lm-eval's document id (its index in the dataset's split, also under ``samples=``)."""
    prompt: str
    """``arguments_hash`` of the requests made for it."""
    value: Any
    """The metric's per-sample value (a 0/1 or a score; a pair for corpus metrics)."""
    excerpt: str
    """The prompt's end, as shown beside a flip."""
    answer: str
    """What the model answered (the continuation it scored best, or its generation)."""


def metric_key(metric: str) -> tuple[str, str]:
    """A metric as harness names it (``acc``, ``exact_match/strict-match``) as lm-eval's sample
    record holds it: the per-sample key and the filter of the record."""
    name, _, filt = metric.partition("/")
    return name, filt or "none"


def answer_of(record: dict[str, Any]) -> str:
    """What the model answered: for a multiple choice the continuation with the highest
    loglikelihood, for a generation its (filtered) text."""
    responses = record.get("filtered_resps") or []
    arguments = record.get("arguments") or []
    pairs = [r for r in responses if isinstance(r, list | tuple) and len(r) == 2]
    scored = all(isinstance(r[0], int | float) for r in pairs)
    if responses and len(pairs) == len(responses) == len(arguments) and scored:
        best = max(range(len(pairs)), key=lambda i: pairs[i][0])
        argument = arguments[best]
        if isinstance(argument, list | tuple) and len(argument) > 1:
            return str(argument[1]).strip()[:EXCERPT]
    if len(responses) == 1 and isinstance(responses[0], str):
        return responses[0][:EXCERPT]
    return json.dumps(responses, ensure_ascii=False, default=str)[:EXCERPT]


def _excerpt(record: dict[str, Any]) -> str:
    arguments = record.get("arguments") or []
    first = arguments[0] if arguments else ""
    context = first[0] if isinstance(first, list | tuple) and first else first
    text = str(context)
    return text if len(text) <= EXCERPT else "…" + text[-EXCERPT:]


def read_samples(path: Path, metric: str) -> list[Sample]:
    """The samples of ``path`` that carry ``metric`` (one record per document and filter: only
    the metric's filter is kept).

    Raises:
        CompareError: the file is missing or unreadable.
    """
    name, filt = metric_key(metric)
    try:
        records = read_sample_records(path)
    except (OSError, EOFError) as err:
        raise CompareError(
            f"samples file {path} cannot be read ({type(err).__name__}: {err}): a comparison "
            "joins the runs' per-sample records. Fix: run the evaluation with log_samples=true"
        ) from None
    found: list[Sample] = []
    for record in records:
        if record.get("filter", "none") != filt or name not in record:
            continue
        found.append(
            Sample(
                task=str(record.get("task", "")),
                doc_id=record.get("doc_id"),
                prompt=arguments_hash(record.get("arguments")),
                value=record[name],
                excerpt=_excerpt(record),
                answer=answer_of(record),
            )
        )
    return found


def sample_metrics(path: Path) -> set[str]:
    """The metrics the samples of ``path`` carry, named as harness names them (``acc``,
    ``exact_match/strict-match``), from the first record of each filter."""
    names: set[str] = set()
    for record in read_sample_records(path):
        filt = record.get("filter", "none")
        for metric in record.get("metrics") or []:
            names.add(metric if filt == "none" else f"{metric}/{filt}")
    return names
