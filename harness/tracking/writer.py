"""The side that talks to MLflow: applies the tracker's queued records, merged into batches.

It runs wherever the tracker puts it: a thread of the harness (replay) or a process of its own
(``harness.tracking.worker``, the live run), and tells the tracker what it needs to know through
``report``: ``("started", experiment_id, parent_id)`` once the parent run is open (or could not
be), ``("failed", reason)`` when an MLflow call failed and tracking turned itself off.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from harness.secrets import mask
from harness.tracking.names import (
    KIND,
    KIND_TAG,
    RUN_UID_TAG,
    VIEW_TAG,
    store_lock,
    view_columns,
)

log = logging.getLogger(__name__)

Report = Callable[[tuple[Any, ...]], None]


@dataclass
class _Pending:
    """Records for one run waiting to go out in one ``log_batch``."""

    metrics: list[tuple[str, float, int, int]] = field(default_factory=list)
    """(key, value, timestamp ms, step)."""
    params: dict[str, str] = field(default_factory=dict)
    """Param values by key."""
    tags: dict[str, str] = field(default_factory=dict)
    """Tag values by key."""


@dataclass
class Target:
    """Where the records go, and under which run-directory id."""

    uri: str
    """The absolute tracking URI."""
    experiment: str
    """The experiment's name (created when missing)."""
    artifact_location: str | None = None
    """The new experiment's artifact folder (None: MLflow's default)."""
    uid: str | None = None
    """The run directory's ``run_uid``, tagged on every run (None: no tag)."""
    adopt: dict[str, str] = field(default_factory=dict)
    """Runs already in MLflow to complete instead of creating, by handle (``""``: the parent,
    else a dataset's name): replay of a run whose live log stopped short. What they hold
    already (a metric's key, a param) is not logged again."""
    resume: bool = False
    """A resumed run (its directory held this run): the latest parent run of ``uid`` already in
    MLflow, and its children, are reopened (RUNNING) and completed, as ``adopt`` would, instead
    of a second parent under the same uid."""


class MlflowWriter:
    """Applies records to MLflow through ``MlflowClient`` (no global active-run state).

    Runs are named by handle: ``None`` is the parent, a dataset's name its child run. Any
    failure logs one warning and turns the writer off; what follows is dropped (replay logs it).
    """

    def __init__(self, target: Target, report: Report) -> None:
        self.target = target
        self.report = report
        self.enabled = True
        self.client: Any = None
        self.experiment_id: str | None = None
        self.parent_id: str | None = None
        self.children: dict[str, str] = {}
        """Child run ids by dataset name."""
        self.running: set[str | None] = set()
        """Handles of the runs opened and not ended yet."""
        self._pending: dict[str | None, _Pending] = {}
        self._tables: dict[str | None, list[str]] = {}
        """The datasets whose per-sample table each run holds, by handle."""
        self._held: dict[str | None, tuple[set[str], set[str]]] = {}
        """Metric and param keys an adopted run holds already, by handle."""

    def apply_all(self, ops: Iterable[tuple[Any, ...]]) -> None:
        """Apply records in order; what merged into batches goes out at the end."""
        for op in ops:
            self._apply(op)
        self._safe("log_batch", self._flush)

    def abandon(self) -> None:
        """The harness went away without closing: what it sent is written, and its open runs
        are marked KILLED (a parent without ``harness.logged`` is replaced by a replay)."""
        self._safe("log_batch", self._flush)
        for run in sorted(self.running, key=lambda r: r is None):  # children before the parent
            self._safe("end run", partial(self._end, run, "KILLED", None))

    def _apply(self, op: tuple[Any, ...]) -> None:
        kind, run, *args = op
        if kind == "batch":
            pending = self._pending.setdefault(run, _Pending())
            pending.metrics.extend(args[0])
            pending.params.update(args[1])
            pending.tags.update(args[2])
            return
        if kind == "start":
            self._safe("start", lambda: self._start(*args))
            self.report(("started", self.experiment_id, self.parent_id))
            return
        self._safe("log_batch", self._flush)  # what was queued before this goes out first
        if kind == "child":
            self._safe("child run", lambda: self._child(run, *args))
        elif kind == "artifact":
            self._safe("log_artifact", lambda: self._artifact(run, *args))
        elif kind == "table":
            self._safe("log_table", lambda: self._table(run, *args))
        elif kind == "end":
            self._safe("end run", lambda: self._end(run, *args))
        elif kind == "view":
            self._safe("experiment view", lambda: self._view(*args))

    def _safe(self, what: str, fn: Callable[[], Any]) -> None:
        if not self.enabled:
            return
        try:
            # One writer at a time on a local SQLite store: two processes whose transactions
            # both read and then write can deadlock, and SQLite then answers "database is
            # locked" at once, past its busy timeout (a 4-job SLURM sweep left a run RUNNING).
            with store_lock(self.target.uri):
                fn()
        except Exception as err:  # tracking must never end the evaluation
            from harness.record.space import tracking_fix

            log.warning(
                "MLflow %s failed at tracking.uri=%s (%s: %s); tracking is off for the rest of "
                "this run, results are still written to the run directory. %s; "
                "then `python -m harness.replay <run dir>` logs this run",
                what,
                mask(self.target.uri),
                type(err).__name__,
                mask(str(err).splitlines()[0]) if str(err) else "",
                mask(tracking_fix(self.target.uri, err)),
            )
            self.enabled = False
            reason = f"MLflow {what} failed at {mask(self.target.uri)} ({type(err).__name__})"
            self.report(("failed", reason))

    def _id(self, run: str | None) -> str:
        run_id = self.parent_id if run is None else self.children[run]
        assert run_id is not None
        return run_id

    def _start(
        self, name: str, params: dict[str, str], tags: dict[str, str], start_time: float | None
    ) -> None:
        from mlflow.tracking import MlflowClient

        from harness.console import route_library_logs

        route_library_logs("mlflow")  # its INFO lines to the log file, not the console
        target = self.target
        # Under ``_safe``'s store lock: a fresh store's schema and one experiment are made once.
        self.client = MlflowClient(tracking_uri=target.uri)
        experiment = self.client.get_experiment_by_name(target.experiment)
        if experiment is None:
            experiment = self._create_experiment()
        if isinstance(experiment, str):
            self.experiment_id = experiment
        else:
            self.experiment_id = experiment.experiment_id
            if KIND_TAG not in experiment.tags:  # an experiment made before harness set it
                self.client.set_experiment_tag(self.experiment_id, KIND_TAG, KIND)
        if target.uid:
            tags = {**tags, RUN_UID_TAG: target.uid}
            if target.resume:
                target.adopt = {**self._earlier_runs(target.uid), **target.adopt}
        self.parent_id = self._adopted(None, tags) or self._created(name, tags, start_time)
        self.running.add(None)
        self._pending.setdefault(None, _Pending()).params.update(params)

    def _earlier_runs(self, uid: str) -> dict[str, str]:
        """The runs an earlier attempt of run ``uid`` left in this experiment, as ``adopt``
        takes them: its latest parent (``""``) and that parent's children by dataset name."""
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{RUN_UID_TAG}` = '{uid}'",
            order_by=["attributes.start_time DESC"],
            max_results=1000,
        )
        parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
        if not parents:
            return {}
        parent = parents[0].info.run_id
        found = {"": parent}
        for run in reversed(runs):  # the latest child of a name wins
            if run.data.tags.get("mlflow.parentRunId") == parent and run.info.run_name:
                found[run.info.run_name] = run.info.run_id
        return found

    def _create_experiment(self) -> Any:
        """Make the experiment: its id, or the experiment another process made meanwhile (two
        jobs starting at once on a server, which no file lock here can order)."""
        from mlflow.exceptions import MlflowException

        target = self.target
        location = target.artifact_location
        try:
            return self.client.create_experiment(
                target.experiment,
                artifact_location=Path(location).resolve().as_uri() if location else None,
                tags={KIND_TAG: KIND},
            )
        except MlflowException as err:
            if err.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            made = self.client.get_experiment_by_name(target.experiment)
            if made is None:
                raise
            return made

    def _child(
        self, name: str, params: dict[str, str], tags: dict[str, str], start_time: float | None
    ) -> None:
        tags = {"mlflow.parentRunId": self._id(None), **tags}
        if self.target.uid:
            tags[RUN_UID_TAG] = self.target.uid
        self.children[name] = self._adopted(name, tags) or self._created(name, tags, start_time)
        self.running.add(name)
        self._pending.setdefault(name, _Pending()).params.update(params)

    def _created(self, name: str, tags: dict[str, str], start_time: float | None) -> str:
        stamp = None if start_time is None else int(start_time * 1000)
        run = self.client.create_run(self.experiment_id, run_name=name, tags=tags, start_time=stamp)
        return str(run.info.run_id)

    def _adopted(self, handle: str | None, tags: dict[str, str]) -> str | None:
        """The id of the run ``handle`` already in MLflow (``Target.adopt``), its tags set and
        what it holds noted (not logged again); None when it is to be created."""
        run_id = self.target.adopt.get("" if handle is None else handle)
        if run_id is None:
            return None
        held = self.client.get_run(run_id)
        if self.target.resume and held.info.status != "RUNNING":  # reopened: it runs again
            self.client.update_run(run_id, status="RUNNING")
        self._held[handle] = (set(held.data.metrics), set(held.data.params))
        self._pending.setdefault(handle, _Pending()).tags.update(tags)
        return run_id

    def _flush(self) -> None:
        """Everything pending, one ``log_batch`` per run (more only past MLflow's limits: 1000
        records, of them at most 100 params and 100 tags)."""
        from mlflow.entities import Metric, Param, RunTag

        while self._pending:
            run, pending = next(iter(self._pending.items()))
            have_metrics, have_params = self._held.get(run, (set(), set()))
            params = [Param(k, v[:6000]) for k, v in pending.params.items() if k not in have_params]
            tags = [RunTag(k, v) for k, v in pending.tags.items()]
            metrics = [
                Metric(k, v, stamp, step)
                for k, v, stamp, step in pending.metrics
                if k not in have_metrics
            ]
            run_id = self._id(run)
            while params or tags or metrics:
                p, t = params[:100], tags[:100]
                m = metrics[: 1000 - len(p) - len(t)]
                self.client.log_batch(run_id, metrics=m, params=p, tags=t)
                params, tags, metrics = params[len(p) :], tags[len(t) :], metrics[len(m) :]
            del self._pending[run]

    def _artifact(self, run: str | None, path: str, artifact_path: str | None) -> None:
        self.client.log_artifact(self._id(run), path, artifact_path)

    def _table(self, run: str | None, samples: str, dataset: str) -> None:
        """The samples file's table as an artifact of the dataset's child run ``run`` (its run
        page shows it as a table) and of the parent (MLflow's "Artifact evaluation" view lines up
        the experiment's runs, which are the parents, by it), each with the tag that makes it a
        table in MLflow's UI, written as ``log_table`` writes both (not ``log_table`` itself: it
        appends to a table already there, and a replay completing a partial log would double
        its rows). A samples file that cannot be read costs its table only, with a warning."""
        import tempfile

        from harness.tracking.samples_table import (
            LOGGED_ARTIFACTS_TAG,
            table_artifact,
            tables_tag,
            write_samples_table,
        )

        artifact = Path(table_artifact(dataset))
        with tempfile.TemporaryDirectory(prefix="harness-table-") as tmp:
            out = Path(tmp) / artifact.name
            try:
                write_samples_table(Path(samples), out)
            except (OSError, EOFError, ValueError) as err:
                log.warning(
                    "per-sample table of %s not logged: %s unreadable (%s: %s)",
                    dataset,
                    samples,
                    type(err).__name__,
                    mask(str(err)),
                )
                return
            for handle in dict.fromkeys([run, None]):
                self.client.log_artifact(self._id(handle), str(out), str(artifact.parent))
                tables = self._tables.setdefault(handle, [])
                if dataset not in tables:
                    tables.append(dataset)
                tag = tables_tag(tables)
                self._pending.setdefault(handle, _Pending()).tags[LOGGED_ARTIFACTS_TAG] = tag

    def _end(self, run: str | None, status: str, end_time: float | None) -> None:
        stamp = None if end_time is None else int(end_time * 1000)
        if run is None:  # a child still open when its parent ends was cut short with it
            for child in [r for r in self.running if r is not None]:
                self.client.set_terminated(self._id(child), status="KILLED", end_time=stamp)
                self.running.discard(child)
        self.client.set_terminated(self._id(run), status=status, end_time=stamp)
        self.running.discard(run)

    def _view(self, headlines: list[str]) -> None:
        """Merge these columns into the shared view (other runs' datasets stay in it)."""
        assert self.experiment_id is not None
        tags = self.client.get_experiment(self.experiment_id).tags
        try:
            columns = list(json.loads(tags.get(VIEW_TAG, "{}")).get("selectedColumns", []))
        except ValueError:
            columns = []
        wanted = view_columns(headlines)
        merged = [c for c in columns if c.startswith("metrics.`") and c not in wanted[-4:]]
        merged = [*dict.fromkeys([*merged, *wanted[:-4]]), *wanted[-4:]]
        if merged != columns:
            view = json.dumps({"selectedColumns": merged})
            self.client.set_experiment_tag(self.experiment_id, VIEW_TAG, view)
