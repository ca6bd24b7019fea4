"""The run's side of MLflow tracking: one parent run per (model, strategy), one child per dataset.

Every call only queues its record and returns: a sender thread hands what has queued, merged, to
the writer (``harness.tracking.writer``), which runs in a process of its own for a live run
(``harness.tracking.worker``: the harness never imports MLflow) or in the sender thread itself
(replay). ``close`` waits until everything is written. Tracking never ends an evaluation: any
MLflow failure logs a warning and turns tracking off for the rest of the run, while results keep
going to the run directory (``python -m harness.replay`` logs them later).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from pathlib import Path
from typing import Any

from harness.config.schema import TrackingBackend, TrackingConfig
from harness.secrets import mask_tree
from harness.tracking.names import (
    local_uri,
    mlflow_defaults,
    run_page_url,
    runs_table_url,
    ui_base,
)

log = logging.getLogger(__name__)


class Tracker:
    """Records a run in MLflow through ``MlflowClient`` (no global active-run state).

    Runs are named by handle: ``None`` is the parent, a dataset's name its child run.
    """

    def __init__(
        self,
        config: TrackingConfig,
        uid: str | None = None,
        own_process: bool = False,
        adopt: dict[str, str] | None = None,
        resume: bool = False,
    ) -> None:
        self.config = config
        self.adopt = dict(adopt or {})
        """Runs already in MLflow to complete, not create (``writer.Target.adopt``)."""
        self.resume = resume
        """A resumed run: its earlier attempt's parent and children reopened
        (``writer.Target.resume``)."""
        self.enabled = config.backend == TrackingBackend.mlflow
        self.uid = uid
        """The run directory's ``run_uid``, tagged on every run (None: no tag)."""
        self.own_process = own_process
        """The writer runs in a worker process (a live run) rather than a thread (replay)."""
        self.parent_id: str | None = None
        self.experiment_id: str | None = None
        self.uri = local_uri(config.uri) if self.enabled else ""
        self.opened: set[str] = set()
        """Handles of the child runs opened so far."""
        self.failed = False
        """An MLflow call failed: what followed it is not in MLflow (replay logs it)."""
        self.failure: str | None = None
        """Why tracking failed (the first failure), for the run's record and a sweep's outcome."""
        self._queue: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()
        self._sender: threading.Thread | None = None
        self._started = threading.Event()

    # ---- what the run calls: each only queues ----------------------------------------------

    def start(
        self,
        run_name: str,
        params: dict[str, str],
        tags: dict[str, str],
        start_time: float | None = None,
    ) -> None:
        """Open the parent run (creating the experiment if needed) and log the params.

        MLflow is imported and the run opened by the writer, overlapping the model load.
        """
        if not self.enabled:
            self._started.set()
            return
        mlflow_defaults()  # before the worker starts: it inherits the environment
        self._sender = threading.Thread(target=self._send, name="mlflow-tracking", daemon=True)
        self._sender.start()
        # Times are taken here, not when the idle-priority worker gets to them (seconds later on
        # a busy node): MLflow shows the run's own start, end and duration.
        when = time.time() if start_time is None else start_time
        self._put("start", None, run_name, mask_tree(params), mask_tree(tags), when)

    def child(
        self,
        name: str,
        params: dict[str, str],
        tags: dict[str, str],
        start_time: float | None = None,
    ) -> str | None:
        """Open a child run under the parent; returns its handle (None when tracking is off)."""
        if not self.enabled:
            return None
        when = time.time() if start_time is None else start_time
        self._put("child", name, mask_tree(params), mask_tree(tags), when)
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

    def log_samples_table(self, samples: Path, dataset: str, run: str | None = None) -> None:
        """Log ``samples``' per-sample table as ``samples/<dataset>.table.json``, a table in
        MLflow's UI (``tracking/samples_table.py``; built by the writer, off the run's path)."""
        self._put("table", run, str(samples), dataset)

    def end(self, run: str | None = None, status: str = "FINISHED", end_time: float | None = None):
        """Mark a run (the parent by default) FINISHED, FAILED or KILLED, at ``end_time``
        (now by default)."""
        self._put("end", run, status, time.time() if end_time is None else end_time)

    def set_view(self, headlines: list[str]) -> None:
        """Add these headline metrics to the experiment's shared runs-table view."""
        self._put("view", None, list(headlines))

    def close(self) -> None:
        """Wait until everything queued is written (or tracking turned itself off)."""
        if self._sender is not None:
            self._queue.put(None)
            self._sender.join()
            self._sender = None

    def _wait_started(self) -> None:
        if self._sender is not None:
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
            "failed": self.failed,
            "failure": self.failure,
        }

    def ui_url(self) -> str | None:
        """Where the runs table shows this experiment (a server's address, or ``mlflow ui``'s)."""
        self._wait_started()
        if not self.enabled or self.experiment_id is None:
            return None
        return runs_table_url(ui_base(self.uri), self.experiment_id)

    def run_url(self) -> str | None:
        """This run's own page in MLflow's UI (a server's address, or ``mlflow ui``'s)."""
        table = self.ui_url()
        if table is None or self.parent_id is None or self.experiment_id is None:
            return None
        return run_page_url(table.split("/#/", 1)[0], self.experiment_id, self.parent_id)

    # ---- delivery ----------------------------------------------------------------------------

    def _put(self, *op: Any) -> None:
        if self.enabled and self._sender is not None:
            self._queue.put(op)

    def _send(self) -> None:
        """Hand what has queued, merged, to the writer until ``close``."""
        if self.own_process:
            from harness.tracking.worker import WorkerProcess

            try:
                link: Any = WorkerProcess(self._target(), self._on_report)
            except OSError as err:
                log.warning(
                    "could not start the MLflow worker process (%s); tracking is off for this "
                    "run, results are still written to the run directory. Log them later: "
                    "python -m harness.replay <run dir>",
                    err,
                )
                self._on_report(("failed",))
                self._started.set()
                return
            deliver = link.send
        else:
            from harness.tracking.writer import MlflowWriter

            link = MlflowWriter(self._target(), self._on_report)
            deliver = link.apply_all
        while True:
            op = self._queue.get()
            ops = [op]
            while op is not None:  # take what queued meanwhile: it goes out merged
                try:
                    op = self._queue.get_nowait()
                except queue.Empty:
                    break
                ops.append(op)
            done = ops[-1] is None
            ops = [o for o in ops if o is not None]
            if ops:
                deliver(ops)
            if done:
                break
        if self.own_process:
            link.close()  # once the worker applied everything (or, starved, goes on alone)
        self._started.set()

    def _target(self) -> Any:
        from harness.tracking.writer import Target

        location = self.config.artifact_location  # resolved here: the worker's cwd may differ
        resolved = str(Path(location).resolve()) if location else None
        experiment = self.config.experiment
        return Target(self.uri, experiment, resolved, self.uid, self.adopt, self.resume)

    def _on_report(self, message: tuple[Any, ...]) -> None:
        """What the writer tells: the parent run is open, tracking failed, the worker ended."""
        if message[0] == "started":
            self.experiment_id, self.parent_id = message[1], message[2]
            self._started.set()
        elif message[0] == "failed":
            self.enabled = False
            self.failed = True
            if self.failure is None:
                self.failure = str(message[1]) if len(message) > 1 else "an MLflow call failed"
        elif message[0] == "gone":
            self._started.set()
