"""MLflow tracking: one parent run per (model, strategy), one child run per dataset.

Every call only queues its record: one background thread imports MLflow, opens the runs and
writes, merging whatever has queued into as few ``log_batch`` calls as MLflow allows, so the
evaluation never waits on MLflow; ``close`` waits for the queue at the end. Tracking never ends an
evaluation: any MLflow failure logs a warning and turns tracking off for the rest of the run,
while results keep going to the run directory (``python -m harness.replay`` logs them later).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.config.schema import TrackingBackend, TrackingConfig
from harness.secrets import mask, mask_tree

log = logging.getLogger(__name__)

# An unreachable server must cost seconds, not MLflow's default minutes of retries; and MLflow's
# "View run ... at: <tracking URI>" lines (one per run ended, credentials in the URI included)
# stay off stdout.
_HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
}
RUN_UID_TAG = "harness.run_uid"
"""Tag on the parent and child runs: which run directory they record (harness/replay.py)."""
LOGGED_TAG = "harness.logged"
"""Set to ``complete`` on the parent as the very last record: a parent without it is partial."""
KIND_TAG, KIND = "mlflow.experimentKind", "custom_model_development"
"""MLflow's experiment-kind tag and its value for model development (not GenAI)."""
VIEW_KEY = "harness"
"""The experiment's shared runs-table view (``mlflow.sharedViewState.harness``)."""
VIEW_TAG = f"mlflow.sharedViewState.{VIEW_KEY}"


def http_defaults() -> None:
    """Seconds, not minutes, for an unreachable server; no URLs on stdout (unless set already)."""
    for key, value in _HTTP_DEFAULTS.items():
        os.environ.setdefault(key, value)


def flatten(tree: Any, prefix: str = "") -> Iterator[tuple[str, str]]:
    """``{"model": {"name": "x"}}`` -> ``("model.name", "x")``; stable names for MLflow params."""
    if isinstance(tree, dict):
        for key in sorted(tree):
            yield from flatten(tree[key], f"{prefix}{key}.")
    elif isinstance(tree, list):
        yield prefix[:-1], ",".join(str(v) for v in tree)
    else:
        yield prefix[:-1], str(tree)


def local_uri(uri: str) -> str:
    """Make a relative SQLite or folder URI absolute, so it means the same from any cwd."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        path = Path(uri.removeprefix("sqlite:///")).resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{path}"
    if "://" not in uri:
        return Path(uri).resolve().as_uri()
    return uri


def run_uid(root: Path) -> str:
    """A stable id of one run directory: its absolute path and the time of its first event.

    The time tells apart two runs written to the same ``output_dir``; a run directory older than
    events.jsonl is known by its path alone.
    """
    first = ""
    events = root / "events.jsonl"
    if events.is_file():
        with events.open(encoding="utf-8") as f:
            first = str(json.loads(f.readline() or "{}").get("time", ""))
    return hashlib.sha256(f"{root.resolve()}\n{first}".encode()).hexdigest()[:32]


def runs_table_url(base: str, experiment_id: str) -> str:
    """The experiment's runs table with harness's columns, in MLflow 3's UI at ``base``.

    MLflow 3.17's UI picks GenAI or model-training pages from ``workflowType`` (the URL, else the
    browser's local storage, GenAI by default), not from the experiment's kind tag, and the
    table's columns from the browser's local storage, unless the URL names a shared view stored
    as an experiment tag (``viewStateShareKey``).
    """
    return (
        f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs"
        f"?workflowType=machine_learning&viewStateShareKey={VIEW_KEY}"
    )


def view_columns(headlines: list[str]) -> list[str]:
    """The runs-table columns of the shared view: each dataset's headline, times, status."""
    metrics = [*headlines, "load_time_s", "total_time_s"]
    return [f"metrics.`{m}`" for m in metrics] + ["attributes.`Duration`", "tags.`status`"]


def parent_tags(model: str, strategy: str, root: Path) -> dict[str, str]:
    """The parent run's own tags (the reproducibility record adds its own at the end)."""
    return {"model": model, "strategy": strategy, "run_dir": str(root)}


def headline(metrics: dict[str, Any]) -> str | None:
    """A dataset's headline metric: the comparison report's rule (``harness.report.table``), so
    the runs table and the report show the same column."""
    from harness.report.table import headline as pick

    return pick(set(metrics))


def log_run_end(
    tracker: Tracker, root: Path, summary: dict[str, Any], end_time: float | None = None
) -> None:
    """What ends a run in MLflow, from its run directory: the run's totals, config.yaml,
    summary.json and the reproducibility record on the parent, the experiment's runs-table view,
    and last the ``harness.logged=complete`` mark (the live run and replay both end here)."""
    from harness.provenance import log_record

    failed = summary.get("failed") or []
    tracker.log_metrics(
        {"total_time_s": summary["total_time_s"], "datasets_failed": float(len(failed))}
    )
    for name in ("config.yaml", "summary.json"):
        if (root / name).is_file():
            tracker.log_artifact(root / name)
    if (root / "reproducibility.json").is_file():
        log_record(tracker, root / "reproducibility.json")
    datasets = summary.get("datasets") or {}
    headlines = [f"{n}/{h}" for n, d in datasets.items() if (h := headline(d.get("metrics") or {}))]
    tracker.set_view(headlines)
    tracker.set_tags({"status": "failed" if failed else "ok", LOGGED_TAG: "complete"})
    tracker.end(status="FAILED" if failed else "FINISHED", end_time=end_time)


@dataclass
class _Pending:
    """Records for one run waiting to go out in one ``log_batch``."""

    metrics: list[tuple[str, float, int, int]] = field(default_factory=list)
    """(key, value, timestamp ms, step)."""
    params: dict[str, str] = field(default_factory=dict)
    """Param values by key."""
    tags: dict[str, str] = field(default_factory=dict)
    """Tag values by key."""


class Tracker:
    """Records a run in MLflow through ``MlflowClient`` (no global active-run state).

    Runs are named by handle: ``None`` is the parent, a dataset's name its child run.
    """

    def __init__(self, config: TrackingConfig, uid: str | None = None) -> None:
        self.config = config
        self.enabled = config.backend == TrackingBackend.mlflow
        self.uid = uid
        """The run directory's ``run_uid``, tagged on every run (None: no tag)."""
        self.client: Any = None
        self.parent_id: str | None = None
        self.experiment_id: str | None = None
        self.uri = local_uri(config.uri) if self.enabled else ""
        self.children: dict[str, str] = {}
        """Child run ids by dataset name (filled by the worker)."""
        self.opened: set[str] = set()
        """Handles of the child runs opened so far (at once, unlike ``children``)."""
        self._queue: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()
        self._worker: threading.Thread | None = None
        self._started = threading.Event()
        self._pending: dict[str | None, _Pending] = {}
        self.failed = False
        """An MLflow call failed: what followed it is not in MLflow (replay logs it)."""

    # ---- what the run calls: each only queues ----------------------------------------------

    def start(
        self,
        run_name: str,
        params: dict[str, str],
        tags: dict[str, str],
        start_time: float | None = None,
    ) -> None:
        """Open the parent run (creating the experiment if needed) and log the params.

        MLflow is imported and the run opened in the worker thread, overlapping the model load.
        """
        if not self.enabled:
            self._started.set()
            return
        http_defaults()
        self._worker = threading.Thread(target=self._work, name="mlflow-tracking", daemon=True)
        self._worker.start()
        self._put("start", None, run_name, mask_tree(params), mask_tree(tags), start_time)

    def child(self, name: str, params: dict[str, str], tags: dict[str, str]) -> str | None:
        """Open a child run under the parent; returns its handle (None when tracking is off)."""
        if not self.enabled:
            return None
        self._put("child", name, mask_tree(params), mask_tree(tags))
        self.opened.add(name)
        return name

    def log_metrics(self, metrics: dict[str, float], run: str | None = None) -> None:
        """Log metrics (step 0) to a run, the parent by default."""
        stamp = int(time.time() * 1000)
        self._put("batch", run, [(k, float(v), stamp, 0) for k, v in metrics.items()], {}, {})

    def log_series(self, points: list[tuple[str, float, int, int]], run: str | None = None) -> None:
        """Log step-indexed metric points ``(key, value, timestamp_ms, step)``."""
        self._put("batch", run, list(points), {}, {})

    def log_params(self, params: dict[str, str], run: str | None = None) -> None:
        self._put("batch", run, [], mask_tree(params), {})

    def set_tags(self, tags: dict[str, str], run: str | None = None) -> None:
        self._put("batch", run, [], {}, mask_tree(tags))

    def log_artifact(self, path: Path, run: str | None = None, artifact_path: str | None = None):
        self._put("artifact", run, str(path), artifact_path)

    def end(self, run: str | None = None, status: str = "FINISHED", end_time: float | None = None):
        """Mark a run (the parent by default) FINISHED, FAILED or KILLED."""
        self._put("end", run, status, end_time)

    def set_view(self, headlines: list[str]) -> None:
        """Add these headline metrics to the experiment's shared runs-table view."""
        self._put("view", None, list(headlines))

    def close(self) -> None:
        """Wait until everything queued is written (or tracking turned itself off)."""
        if self._worker is not None:
            self._queue.put(None)
            self._worker.join()
            self._worker = None

    def _wait_started(self) -> None:
        if self._worker is not None:
            self._started.wait()

    def describe(self) -> dict[str, Any]:
        self._wait_started()
        return {
            "enabled": self.enabled,
            "uri": self.uri,
            "experiment": self.config.experiment,
            "artifact_location": (
                str(Path(self.config.artifact_location).resolve())
                if self.config.artifact_location
                else None
            ),
            "experiment_id": self.experiment_id,
            "run_id": self.parent_id,
            "run_uid": self.uid,
        }

    def ui_url(self) -> str | None:
        """Where the runs table shows this experiment (a server's address, or ``mlflow ui``'s)."""
        self._wait_started()
        if not self.enabled or self.experiment_id is None:
            return None
        base = self.uri if self.uri.startswith(("http://", "https://")) else "http://127.0.0.1:5000"
        return runs_table_url(base, self.experiment_id)

    # ---- the worker ---------------------------------------------------------------------------

    def _put(self, *op: Any) -> None:
        if self.enabled and self._worker is not None:
            self._queue.put(op)

    def _work(self) -> None:
        while True:
            op = self._queue.get()
            ops = [op]
            while op is not None:  # take what queued meanwhile: it goes out merged
                try:
                    op = self._queue.get_nowait()
                except queue.Empty:
                    break
                ops.append(op)
            for item in ops:
                if item is not None:
                    self._apply(item)
            self._safe("log_batch", self._flush)
            if ops[-1] is None:
                return

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
            self._started.set()
            return
        self._safe("log_batch", self._flush)  # what was queued before this goes out first
        if kind == "child":
            self._safe("child run", lambda: self._child(run, *args))
        elif kind == "artifact":
            self._safe("log_artifact", lambda: self._artifact(run, *args))
        elif kind == "end":
            self._safe("end run", lambda: self._end(run, *args))
        elif kind == "view":
            self._safe("experiment view", lambda: self._view(*args))

    def _safe(self, what: str, fn: Callable[[], Any]) -> None:
        if not self.enabled:
            return
        try:
            fn()
        except Exception as err:  # tracking must never end the evaluation
            log.warning(
                "MLflow %s failed at tracking.uri=%s (%s: %s); tracking is off for the rest of "
                "this run, results are still written to the run directory. Fix: start the "
                "server (mlflow server --port ...) or pick tracking=local or tracking=none; "
                "then `python -m harness.replay <run dir>` logs this run",
                what,
                mask(self.uri),
                type(err).__name__,
                mask(str(err).splitlines()[0]) if str(err) else "",
            )
            self.enabled = False
            self.failed = True

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
        self.client = MlflowClient(tracking_uri=self.uri)
        experiment = self.client.get_experiment_by_name(self.config.experiment)
        if experiment is None:
            location = self.config.artifact_location
            self.experiment_id = self.client.create_experiment(
                self.config.experiment,
                artifact_location=Path(location).resolve().as_uri() if location else None,
                tags={KIND_TAG: KIND},
            )
        else:
            self.experiment_id = experiment.experiment_id
            if KIND_TAG not in experiment.tags:  # an experiment made before harness set it
                self.client.set_experiment_tag(self.experiment_id, KIND_TAG, KIND)
        if self.uid:
            tags = {**tags, RUN_UID_TAG: self.uid}
        stamp = None if start_time is None else int(start_time * 1000)
        run = self.client.create_run(self.experiment_id, run_name=name, tags=tags, start_time=stamp)
        self.parent_id = run.info.run_id
        self._pending.setdefault(None, _Pending()).params.update(params)

    def _child(self, name: str, params: dict[str, str], tags: dict[str, str]) -> None:
        tags = {"mlflow.parentRunId": self._id(None), **tags}
        if self.uid:
            tags[RUN_UID_TAG] = self.uid
        run = self.client.create_run(self.experiment_id, run_name=name, tags=tags)
        self.children[name] = str(run.info.run_id)
        self._pending.setdefault(name, _Pending()).params.update(params)

    def _flush(self) -> None:
        """Everything pending, one ``log_batch`` per run (more only past MLflow's limits: 1000
        records, of them at most 100 params and 100 tags)."""
        from mlflow.entities import Metric, Param, RunTag

        while self._pending:
            run, pending = next(iter(self._pending.items()))
            params = [Param(k, v[:6000]) for k, v in pending.params.items()]
            tags = [RunTag(k, v) for k, v in pending.tags.items()]
            metrics = [Metric(k, v, stamp, step) for k, v, stamp, step in pending.metrics]
            run_id = self._id(run)
            while params or tags or metrics:
                p, t = params[:100], tags[:100]
                m = metrics[: 1000 - len(p) - len(t)]
                self.client.log_batch(run_id, metrics=m, params=p, tags=t)
                params, tags, metrics = params[len(p) :], tags[len(t) :], metrics[len(m) :]
            del self._pending[run]

    def _artifact(self, run: str | None, path: str, artifact_path: str | None) -> None:
        self.client.log_artifact(self._id(run), path, artifact_path)

    def _end(self, run: str | None, status: str, end_time: float | None) -> None:
        stamp = None if end_time is None else int(end_time * 1000)
        self.client.set_terminated(self._id(run), status=status, end_time=stamp)

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
