"""What harness's MLflow records are called: tags, params, run ids, the runs-table view.

Shared by the live run, the replay and the report; nothing here imports MLflow.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

from harness.tracking.samples_table import table_artifact

# An unreachable server must cost seconds, not MLflow's default minutes of retries; MLflow's
# "View run ... at: <tracking URI>" lines (one per run ended, credentials in the URI included)
# stay off stdout; and MLflow's own usage telemetry (a thread posting each client call's kind and
# duration to mlflow.org) stays off: harness sends nothing to a place the user did not name, and
# cluster nodes often have no internet to send it to.
_MLFLOW_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
    "MLFLOW_DISABLE_TELEMETRY": "true",
}
RUN_UID_TAG = "harness.run_uid"
"""Tag on the parent and child runs: which run directory they record (harness/replay/)."""
LOGGED_TAG = "harness.logged"
"""Set to ``complete`` on the parent as the very last record: a parent without it is partial."""
KIND_TAG, KIND = "mlflow.experimentKind", "custom_model_development"
"""MLflow's experiment-kind tag and its value for model development (not GenAI)."""
VIEW_KEY = "harness"
"""The experiment's shared runs-table view (``mlflow.sharedViewState.harness``)."""
VIEW_TAG = f"mlflow.sharedViewState.{VIEW_KEY}"


def mlflow_defaults() -> None:
    """Seconds, not minutes, for an unreachable server; no URLs on stdout; no usage telemetry
    (each unless set already)."""
    for key, value in _MLFLOW_DEFAULTS.items():
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


@contextlib.contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """Hold a local SQLite store to this process while it writes: two processes creating a fresh
    store's schema at once break it (``duplicate column name: step``), two creating one
    experiment collide, and two writing at once can deadlock ("database is locked"). An
    exclusive ``flock`` on ``<store>.lock`` beside the database; any other URI (a server, a
    folder) needs none. Not reentrant: a holder must not take it again."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    import fcntl

    path = Path(uri.removeprefix("sqlite:///"))
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{path}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def run_uid(root: Path) -> str:
    """A stable id of one run directory, wherever it is moved to later.

    The ``run_uid`` its first event (``planned``) carries; a run directory written before events
    carried one is known by its absolute path and the time of its first event (the time tells
    apart two runs written to the same ``output_dir``), or by its path alone.
    """
    from harness.record.rundir import RunDirectory

    first: dict[str, Any] = {}
    events = RunDirectory(root).events
    if events.is_file():
        with events.open(encoding="utf-8") as f:
            first = json.loads(f.readline() or "{}")
    if first.get("run_uid"):
        return str(first["run_uid"])
    seed = f"{root.resolve()}\n{first.get('time', '')}"
    return hashlib.sha256(seed.encode()).hexdigest()[:32]


CLASSIC_VIEW = "workflowType=machine_learning"
"""The URL query that makes MLflow 3's UI show its model-training pages, not GenAI's: without
it a run's page takes the browser's stored workflow type, GenAI by default (Traces, Evaluations
tabs), whatever the experiment's kind tag says."""


def runs_table_url(base: str, experiment_id: str) -> str:
    """The experiment's runs table with harness's columns, in MLflow 3's UI at ``base``.

    MLflow 3.17's UI picks GenAI or model-training pages from ``workflowType`` (the URL, else the
    browser's local storage, GenAI by default), not from the experiment's kind tag, and the
    table's columns from the browser's local storage, unless the URL names a shared view stored
    as an experiment tag (``viewStateShareKey``).
    """
    return (
        f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs"
        f"?{CLASSIC_VIEW}&viewStateShareKey={VIEW_KEY}"
    )


def run_page_url(base: str, experiment_id: str, run_id: str) -> str:
    """One run's own page in MLflow 3's UI at ``base``, the model-training view of it."""
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}?{CLASSIC_VIEW}"


MLFLOW_UI = "http://127.0.0.1:5000"
"""Where ``mlflow ui`` serves a local store by default: the links' base for a store that is not
a server."""


def ui_base(uri: str) -> str:
    """The address of MLflow's UI for tracking ``uri``: a server's own, else ``mlflow ui``'s."""
    return uri.rstrip("/") if uri.startswith(("http://", "https://")) else MLFLOW_UI


def samples_table_link(
    tracking_uri: str, experiment_id: str | None, run_id: str | None, dataset: str
) -> str | None:
    """The page of MLflow 3's UI that shows ``dataset``'s per-sample table of a run, as a table
    (``samples/<dataset>.table.json`` under the run's Artifacts, "View as table"); ``run_id``
    the parent run or the dataset's child run, which both hold it. None without an experiment
    or a run id. The run logged it only with ``log_samples=true``."""
    if not experiment_id or not run_id:
        return None
    page = run_page_url(ui_base(tracking_uri), experiment_id, run_id).split("?", 1)[0]
    return f"{page}/artifacts/{quote(table_artifact(dataset))}?{CLASSIC_VIEW}"


def samples_compare_link(
    tracking_uri: str, experiment_id: str | None, run_ids: list[str] | None = None
) -> str | None:
    """The experiment's runs side by side, sample by sample, in MLflow 3's UI: the runs page in
    its "Artifact evaluation" mode (``compareRunsMode=ARTIFACT``), which lines up the visible
    runs' tables of one name by their first column (``sample``) and shows each run's
    ``output``; a dataset is picked in its "Table" menu. ``run_ids`` (parent runs) narrows the
    runs shown to those. None without an experiment id."""
    if not experiment_id:
        return None
    link = f"{ui_base(tracking_uri)}/#/experiments/{experiment_id}/runs?{CLASSIC_VIEW}"
    link += "&compareRunsMode=ARTIFACT"
    if run_ids:
        listed = ", ".join(f"'{r}'" for r in run_ids)
        link += "&searchFilter=" + quote(f"attributes.run_id IN ({listed})", safe="")
    return link


def view_columns(headlines: list[str]) -> list[str]:
    """The runs-table columns of the shared view: each dataset's headline, times, status."""
    metrics = [*headlines, "load_time_s", "total_time_s"]
    return [f"metrics.`{m}`" for m in metrics] + ["attributes.`Duration`", "tags.`status`"]


SHOWN_DATASETS = 3
"""Datasets a parent run's name lists before ``+N``."""


def parent_run_name(model: str, strategy: str, datasets: list[str], uid: str) -> str:
    """The parent run's name: model/strategy, its datasets, and the first six characters of its
    ``run_uid`` (``tiny_char/single arith_mc,reverse_gen 3f9a1c``), so runs of one model and
    strategy differ in MLflow's table, and the live run and its replay have the same name."""
    shown = ",".join(datasets[:SHOWN_DATASETS])
    if len(datasets) > SHOWN_DATASETS:
        shown += f"+{len(datasets) - SHOWN_DATASETS}"
    return " ".join(part for part in (f"{model}/{strategy}", shown, uid[:6]) if part)


def parent_tags(model: str, strategy: str, root: Path) -> dict[str, str]:
    """The parent run's own tags (the reproducibility record adds its own at the end)."""
    return {"model": model, "strategy": strategy, "run_dir": str(root)}


def fresh_run_uid(root: Path) -> str:
    """The ``run_uid`` for a run about to write its ``planned`` event into ``root``: the
    directory's own when it holds events already (a resumed run is the same run), else new."""
    from harness.record.rundir import RunDirectory

    events = RunDirectory(root).events
    if events.is_file() and events.stat().st_size:
        return run_uid(root)
    import uuid

    return uuid.uuid4().hex
