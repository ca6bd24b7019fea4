"""What happened to one dataset of a run, as the summary, the store and MLflow record it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from harness.record.groups import breakdown


@dataclass
class DatasetOutcome:
    """What happened to one dataset: its metrics and throughput, or its failure."""

    name: str
    """The dataset's key in the run config."""
    task: str
    """Its lm-eval task or group."""
    status: str = "ok"
    """``ok`` or ``failed``."""
    eval_time_s: float = 0.0
    """Wall time of its ``simple_evaluate`` call."""
    requests: int = 0
    """Requests sent to the engine in this run."""
    requests_journaled: int = 0
    """Requests answered from the dataset's request journal (written by an earlier run that
    stopped inside this dataset) instead of the engine."""
    journal_sources: list[dict[str, Any]] = field(default_factory=list)
    """Where the journaled answers came from: each earlier writing session (host, pid,
    data-parallel size, start) with ``records``, how many of its answers were read."""
    requests_retried: int = 0
    """Requests sent again after a transport error (an endpoint's timeouts, HTTP 429 and 5xx):
    none of the failed tries was scored; 0 for an engine in this node."""
    prompt_tokens: int = 0
    """Tokens the model read."""
    generated_tokens: int = 0
    """Tokens the model generated."""
    requests_per_s: float = 0.0
    """Requests over eval_time_s."""
    tokens_per_s: float = 0.0
    """Prompt plus generated tokens over eval_time_s."""
    metrics: dict[str, float] = field(default_factory=dict)
    """Headline metrics as logged to MLflow (``acc``, ``exact_match/strict-match``)."""
    result_file: str | None = None
    """Its lm-eval result JSON in the run directory."""
    samples_file: str | None = None
    """lm-eval's per-sample records (``log_samples=true``): ``samples/<dataset>.jsonl.gz``."""
    fingerprint: str = ""
    """The fingerprint its result is stored under (harness/evaluation/fingerprint.py)."""
    error_type: str | None = None
    """Exception class, when it failed."""
    error_message: str | None = None
    """First line of the exception, when it failed."""
    resumed: bool = False
    """Taken from the result store instead of evaluated in this run."""
    evaluation: dict[str, Any] = field(default_factory=dict)
    """lm-eval's evaluation settings where they differ from its defaults (chat template, system
    instruction, gen_kwargs, ...; harness/config/evaluation.py), as its result is keyed."""
    group_subtasks: dict[str, list[str]] = field(default_factory=dict)
    """When the dataset's task is an lm-eval group: that group and each subgroup under it with
    its direct members, as lm-eval's result lists them (``group_subtasks``); empty for a single
    task (harness/record/groups.py)."""
    subtasks: dict[str, dict[str, float]] = field(default_factory=dict)
    """When the dataset's task is a group: the metrics of every subgroup and subtask under it,
    by lm-eval's name, depth-first, named as ``metrics`` is; empty for a single task."""

    def take_groups(self, result: dict[str, Any]) -> None:
        """Keep the subgroups and subtasks of lm-eval's ``result`` when the task is a group."""
        self.group_subtasks, self.subtasks = breakdown(result, self.task)

    def timing_metrics(self) -> dict[str, float]:
        return {
            "eval_time_s": self.eval_time_s,
            "requests": float(self.requests),
            "requests_journaled": float(self.requests_journaled),
            "requests_retried": float(self.requests_retried),
            "requests_per_s": self.requests_per_s,
            "tokens_per_s": self.tokens_per_s,
        }

    def to_dict(self) -> dict[str, Any]:
        """The outcome as summary.json, the events and the store hold it."""
        return asdict(self)

    @classmethod
    def from_dict(cls, entry: dict[str, Any], name: str = "") -> DatasetOutcome:
        """An outcome as ``to_dict`` wrote it, by this commit or an earlier one: a key it no
        longer knows is left out, one it did not write yet takes its default (``name``: the
        dataset's key in the summary, where the entry lacks one)."""
        known = {f.name for f in fields(cls)}
        given = {k: v for k, v in entry.items() if k in known}
        given.setdefault("name", name)
        given.setdefault("task", "")
        return cls(**given)
