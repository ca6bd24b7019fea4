"""The runs a report is built from, as read back from MLflow: a parent run per evaluation (a
model, a strategy, a checkpoint, its datasets' settings) and a child run per dataset.

A parent run carries the tags ``model``, ``strategy``, ``run_dir`` and, from its reproducibility
record, ``checkpoint.path`` and ``checkpoint.hash`` (harness/record/provenance.py); its children
carry ``mlflow.parentRunId`` and are named after their dataset (harness/tracking/).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from harness.errors import HarnessError
from harness.record.provenance import recorded_checkpoint
from harness.report.variant import CHECKPOINT_HASH, IGNORED_PARAMS


class ReportError(HarnessError):
    """The report has nothing to read: no store, no experiment, no runs that match."""


@dataclass
class DatasetRun:
    """One dataset's child run."""

    name: str
    """The dataset's name (the child run's name)."""
    run_id: str
    """The child run's id."""
    status: str
    """MLflow's run status: ``FINISHED``, ``FAILED``, ``KILLED`` or ``RUNNING``."""
    metrics: dict[str, float]
    """The child's metrics (latest value of each), as MLflow returns them."""
    tags: dict[str, str]
    """The child's tags (``status``, ``error_type``, ``resumed``, ...)."""
    artifact_uri: str = ""
    """Where the child run's artifacts are (its result among them), as MLflow gives it."""
    n_samples: dict[str, int] = field(default_factory=dict)
    """Documents each lm-eval task of the dataset evaluated (lm-eval's ``n-samples``,
    ``effective``: after limit or samples), from the result the child run holds; empty when it
    holds none (a failed dataset)."""

    @property
    def tree(self) -> dict[str, list[str]]:
        """When the dataset is an lm-eval group: each group under it with its direct members
        (its ``group_subtasks`` tag, harness/tracking/groups.py); empty for a single task."""
        from harness.tracking.groups import read_tree

        return read_tree(self.tags)

    @property
    def task(self) -> str:
        """Its lm-eval task or group (the ``task`` tag; the dataset's name when missing)."""
        return self.tags.get("task", self.name)

    def documents(self, member: str | None = None) -> int | None:
        """Documents behind the dataset's figure (``member``: a subgroup's or subtask's): the
        task's own count, or the sum over the tasks under a group; None when not recorded."""
        name = member or self.task
        if name in self.n_samples:
            return self.n_samples[name]
        tree = self.tree
        if name in tree:
            counts = [self.documents(m) for m in tree[name]]
            return sum(c for c in counts if c is not None) if None not in counts else None
        if member is None and self.n_samples:  # a task named apart from its dataset
            return sum(self.n_samples.values())
        return None


@dataclass
class ParentRun:
    """One evaluation's run: the parent and its datasets."""

    run_id: str
    """The parent run's id."""
    model: str
    """Its ``model`` tag."""
    strategy: str
    """Its ``strategy`` tag."""
    status: str
    """MLflow's run status of the parent."""
    start_time: int
    """When it started, milliseconds since the epoch."""
    run_dir: str
    """Its ``run_dir`` tag: where the run directory was written."""
    metrics: dict[str, float]
    """The parent's metrics (``load_time_s``, ``total_time_s``, ``load/telemetry/...``)."""
    datasets: dict[str, DatasetRun] = field(default_factory=dict)
    """Its child runs by dataset name, in the order they started."""
    older: list[str] = field(default_factory=list)
    """Ids of earlier ended runs of the same evaluation that this one supersedes."""
    params: dict[str, str] = field(default_factory=dict)
    """The parent's params: the config as typed, flattened (``dataset.arith_mc.limit``, ...)."""
    tags: dict[str, str] = field(default_factory=dict)
    """The parent's tags (``checkpoint.path``, ``checkpoint.hash``, versions, ...)."""
    fingerprints: dict[str, str] = field(default_factory=dict)
    """Each dataset's result fingerprint (its child run's ``fingerprint`` param)."""
    variant: str = ""
    """What tells this row apart from the other rows of its model and strategy, shortened
    (``limit=10``, ``pretrained=.../runA/checkpoint-500``; harness/report/variant.py)."""
    full_variant: str = ""
    """The same settings by their full names and values, never shortened."""

    @property
    def label(self) -> str:
        """``model/strategy``, with the variant where there is one."""
        base = f"{self.model}/{self.strategy}"
        return f"{base} [{self.variant}]" if self.variant else base

    @property
    def checkpoint(self) -> str:
        """The checkpoint as the run resolved it: the recorded ``checkpoint.path``, else the
        plan's ``model_facts.pretrained``, else ``model.pretrained`` as typed, normalised (runs
        logged before the record had it)."""
        return recorded_checkpoint(self.tags, self.params)

    @property
    def checkpoint_hash(self) -> str:
        """The checkpoint's content hash where the run recorded one."""
        return self.tags.get("checkpoint.hash", "")

    def settings(self) -> dict[str, str]:
        """What the run was asked to evaluate, as its variant compares it: the params that can
        change a result, the checkpoint as resolved (not as typed) with its content hash."""
        out = {k: v for k, v in self.params.items() if not k.startswith(IGNORED_PARAMS)}
        if "model.pretrained" in out or self.checkpoint:
            out["model.pretrained"] = self.checkpoint
        if self.checkpoint_hash:
            out[CHECKPOINT_HASH] = self.checkpoint_hash
        return out


@dataclass
class Collection:
    """What the report is built from."""

    uri: str
    """The tracking URI read (credentials masked)."""
    experiment: str
    """The experiment's name."""
    experiment_id: str
    """The experiment's id."""
    runs: list[ParentRun]
    """The parent runs shown, one row each."""
    notes: list[str] = field(default_factory=list)
    """What the report was asked for and could not show (``--model b`` with no runs)."""
