"""MLflow tracking: one parent run per (model, strategy), one child run per dataset.

Tracking never ends an evaluation: any MLflow failure logs a warning and turns tracking off
for the rest of the run, while results keep going to the run directory.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from harness.config.schema import TrackingBackend, TrackingConfig
from harness.secrets import mask, mask_tree

log = logging.getLogger(__name__)
T = TypeVar("T")

# An unreachable server must cost seconds, not MLflow's default minutes of retries; and MLflow's
# "View run ... at: <tracking URI>" lines (one per run ended, credentials in the URI included)
# stay off stdout.
_HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
}


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


class Tracker:
    """Records a run in MLflow through ``MlflowClient`` (no global active-run state)."""

    def __init__(self, config: TrackingConfig) -> None:
        self.config = config
        self.enabled = config.backend == TrackingBackend.mlflow
        self.client: Any = None
        self.parent_id: str | None = None
        self.experiment_id: str | None = None
        self.uri = local_uri(config.uri) if self.enabled else ""
        self._starting: threading.Thread | None = None
        self.children: dict[str, str] = {}
        """Child run ids by dataset name."""

    def _wait_for_start(self) -> None:
        if self._starting is not None and self._starting is not threading.current_thread():
            self._starting.join()
            self._starting = None

    def _safe(self, what: str, fn: Callable[[], T]) -> T | None:
        self._wait_for_start()
        if not self.enabled:
            return None
        try:
            return fn()
        except Exception as err:  # tracking must never end the evaluation
            log.warning(
                "MLflow %s failed at tracking.uri=%s (%s: %s); tracking is off for the rest of "
                "this run, results are still written to the run directory. Fix: start the "
                "server (mlflow server --port ...) or pick tracking=local or tracking=none",
                what,
                mask(self.uri),
                type(err).__name__,
                mask(str(err).splitlines()[0]) if str(err) else "",
            )
            self.enabled = False
            return None

    def start(self, run_name: str, params: dict[str, str], tags: dict[str, str]) -> None:
        """Open the parent run (creating the experiment if needed) and log the params.

        This runs in a background thread, overlapping the model load: importing MLflow and
        creating a fresh SQLite store take seconds. Every later call waits for it first.
        """
        if not self.enabled:
            return
        for key, value in _HTTP_DEFAULTS.items():
            os.environ.setdefault(key, value)
        params, tags = mask_tree(params), mask_tree(tags)
        self._starting = threading.Thread(
            target=self._safe,
            args=("start", lambda: self._start(run_name, params, tags)),
            name="mlflow-start",
            daemon=True,
        )
        self._starting.start()

    def _start(self, run_name: str, params: dict[str, str], tags: dict[str, str]) -> None:
        from mlflow.entities import Param
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
            )
        else:
            self.experiment_id = experiment.experiment_id
        run = self.client.create_run(self.experiment_id, run_name=run_name, tags=tags)
        self.parent_id = run.info.run_id
        items = [Param(k, v[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(self.parent_id, params=items[i : i + 100])

    def log_metrics(self, metrics: dict[str, float], run_id: str | None = None) -> None:
        """Log metrics (step 0) to a run, the parent by default."""
        self._safe("log_metrics", lambda: self._log_metrics(metrics, run_id or self.parent_id))

    def _log_metrics(self, metrics: dict[str, float], run_id: str | None) -> None:
        import time

        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        items = [Metric(k, float(v), stamp, 0) for k, v in metrics.items()]
        for i in range(0, len(items), 1000):
            self.client.log_batch(run_id, metrics=items[i : i + 1000])

    def child(self, name: str, params: dict[str, str], tags: dict[str, str]) -> str | None:
        """Open a child run under the parent; returns its id (None when tracking is off)."""
        params, tags = mask_tree(params), mask_tree(tags)
        return self._safe("child run", lambda: self._child(name, params, tags))

    def _child(self, name: str, params: dict[str, str], tags: dict[str, str]) -> str:
        from mlflow.entities import Param

        assert self.parent_id is not None
        run = self.client.create_run(
            self.experiment_id,
            run_name=name,
            tags={"mlflow.parentRunId": self.parent_id, **tags},
        )
        if params:
            self.client.log_batch(run.info.run_id, params=[Param(k, v) for k, v in params.items()])
        self.children[name] = str(run.info.run_id)
        return str(run.info.run_id)

    def log_series(
        self, points: list[tuple[str, float, int, int]], run_id: str | None = None
    ) -> None:
        """Log step-indexed metric points ``(key, value, timestamp_ms, step)``, batched."""
        self._safe("log_series", lambda: self._log_series(points, run_id or self.parent_id))

    def _log_series(self, points: list[tuple[str, float, int, int]], run_id: str | None) -> None:
        from mlflow.entities import Metric

        items = [Metric(k, v, stamp, step) for k, v, stamp, step in points]
        for i in range(0, len(items), 1000):
            self.client.log_batch(run_id, metrics=items[i : i + 1000])

    # The default target (the parent) is read inside each lambda: only after start() has
    # finished in its thread is parent_id known.
    def set_tags(self, tags: dict[str, str], run_id: str | None = None) -> None:
        tags = mask_tree(tags)
        self._safe("set_tag", lambda: self._set_tags(tags, run_id or self.parent_id))

    def _set_tags(self, tags: dict[str, str], run_id: str | None) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(k, v) for k, v in tags.items()]
        for i in range(0, len(items), 100):  # one batch (one transaction) per 100 tags
            self.client.log_batch(run_id, tags=items[i : i + 100])

    def log_artifact(
        self, path: Path, run_id: str | None = None, artifact_path: str | None = None
    ) -> None:
        self._safe(
            "log_artifact",
            lambda: self.client.log_artifact(run_id or self.parent_id, str(path), artifact_path),
        )

    def end(self, run_id: str | None = None, status: str = "FINISHED") -> None:
        """Mark a run (the parent by default) FINISHED, FAILED or KILLED."""
        self._safe(
            "end run",
            lambda: self.client.set_terminated(run_id or self.parent_id, status=status),
        )

    def describe(self) -> dict[str, Any]:
        self._wait_for_start()
        return {
            "enabled": self.enabled,
            "uri": self.uri,
            "experiment_id": self.experiment_id,
            "run_id": self.parent_id,
        }
