"""Read a harness experiment back from MLflow: the parent run of each (model, strategy) and the
child run of each of its datasets, through ``MlflowClient`` only (no reading of the store's files).

A parent run carries the tags ``model``, ``strategy`` and ``run_dir``; its children carry
``mlflow.parentRunId`` and are named after their dataset (harness/tracking.py).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import HarnessError

SHOWN_STATUSES = ("FINISHED", "FAILED")
"""Parent runs a report picks by default: ended runs (a RUNNING one may still be writing)."""

# An unreachable server must fail in seconds with our message, not after MLflow's minutes of
# retries (the same settings as harness/tracking.py).
_HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}


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


@dataclass
class ParentRun:
    """One (model, strategy) run: the parent and its datasets."""

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
    fingerprints: dict[str, str] = field(default_factory=dict)
    """Each dataset's result fingerprint (its child run's ``fingerprint`` param)."""
    variant: str = ""
    """What tells this row apart from the other rows of its model and strategy: the settings
    whose values differ between them (``arith_mc.limit=10``, ``model.pretrained=runA/...``)."""

    @property
    def label(self) -> str:
        """``model/strategy``, with the variant where there is one."""
        base = f"{self.model}/{self.strategy}"
        return f"{base} [{self.variant}]" if self.variant else base


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


def default_target() -> tuple[str, str]:
    """The tracking URI and experiment of the default config (``tracking=local``): the local
    SQLite store under ``outputs/`` of the current directory, experiment ``harness``."""
    from hydra import compose, initialize_config_dir

    from harness.config.store import register_configs
    from harness.paths import CONF_DIR

    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["tracking=local"])
    return str(cfg.tracking.uri), str(cfg.tracking.experiment)


def resolve_uri(uri: str) -> str:
    """``uri`` with a relative SQLite path or folder made absolute; a local store that does not
    exist is an error here (MLflow would create an empty one)."""
    path: Path | None = None
    if uri.startswith("sqlite:///"):
        path = Path(uri.removeprefix("sqlite:///")).resolve()
        uri = f"sqlite:///{path}"
    elif uri.startswith("file://"):
        path = Path(uri.removeprefix("file://"))
    elif "://" not in uri:
        path = Path(uri).resolve()
        uri = path.as_uri()
    if path is not None and not path.exists():
        raise ReportError(
            f"no MLflow store at tracking URI {uri} ({path} does not exist): a report reads "
            "the runs of an existing store. Fix: run an evaluation first (python -m harness) "
            "from this directory, or name the store with --tracking-uri sqlite:///PATH or "
            "--tracking-uri http://HOST:PORT"
        )
    return uri


def open_client(uri: str) -> Any:
    """An ``MlflowClient`` on ``uri`` (as ``resolve_uri`` returns it), MLflow's logs kept off the
    console."""
    for key, value in _HTTP_DEFAULTS.items():
        os.environ.setdefault(key, value)
    from mlflow.tracking import MlflowClient

    from harness.console import route_library_logs

    route_library_logs("mlflow")  # its INFO lines (store migrations) stay off the console
    return MlflowClient(tracking_uri=uri)


def _search_all(client: Any, experiment_id: str) -> list[Any]:
    """Every active run of the experiment, newest first, page by page."""
    runs: list[Any] = []
    token = None
    while True:
        page = client.search_runs(
            [experiment_id],
            max_results=1000,
            order_by=["attributes.start_time DESC"],
            page_token=token,
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _experiment(client: Any, uri: str, name: str) -> Any:
    from harness.errors import did_you_mean
    from harness.secrets import mask

    try:
        experiment = client.get_experiment_by_name(name)
    except Exception as err:  # a server that is down, a URI MLflow does not know
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise ReportError(
            f"cannot read the MLflow store at tracking URI {mask(uri)} ({type(err).__name__}: "
            f"{mask(first)[:300]}): a report needs a reachable store. Fix: start the server "
            "(mlflow server --port ...), or name another store with --tracking-uri"
        ) from None
    if experiment is None:
        names = [e.name for e in client.search_experiments()]
        raise ReportError(
            f"experiment {name!r} does not exist at tracking URI {mask(uri)}: a report reads one "
            f"experiment of the store.{did_you_mean(name, names)} Fix: pick one with --experiment "
            f"NAME (this store has: {', '.join(sorted(names)) or 'none'})"
        )
    return experiment


def _parent(run: Any) -> ParentRun:
    tags = run.data.tags
    return ParentRun(
        run_id=run.info.run_id,
        model=tags.get("model", run.info.run_name or "?"),
        strategy=tags.get("strategy", "?"),
        status=run.info.status,
        start_time=int(run.info.start_time or 0),
        run_dir=tags.get("run_dir", ""),
        metrics=dict(run.data.metrics),
        params=dict(run.data.params),
    )


def collect(
    uri: str,
    experiment: str,
    models: list[str] | None = None,
    strategies: list[str] | None = None,
    run_ids: list[str] | None = None,
) -> Collection:
    """The parent runs a report shows, each with its datasets' child runs.

    Args:
        uri: the tracking URI (``sqlite:///...``, a folder or ``http://host:port``).
        experiment: the experiment's name.
        models: keep only these ``model`` tags.
        strategies: keep only these ``strategy`` tags.
        run_ids: exactly these parent runs (one row each); by default the latest ended
            (FINISHED or FAILED) parent run of each (model, strategy).

    Raises:
        ReportError: the store is unreachable, the experiment does not exist, or no run matches.
    """
    uri = resolve_uri(uri)
    client = open_client(uri)
    exp = _experiment(client, uri, experiment)
    runs = _search_all(client, exp.experiment_id)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    from harness.secrets import mask

    where = f"experiment {experiment!r} at tracking URI {mask(uri)}"
    if not parents:
        raise ReportError(
            f"{where} holds no runs: a report compares recorded runs. Fix: run an evaluation "
            "tracked there first (python -m harness tracking=local, or tracking=server "
            "tracking.uri=...), or pick another --experiment / --tracking-uri"
        )
    by_parent: dict[str, list[Any]] = {}
    for child in reversed(children):  # oldest first: the datasets in the order they ran
        by_parent.setdefault(child.data.tags["mlflow.parentRunId"], []).append(child)
    prints = {
        pid: {c.data.tags.get("dataset", c.info.run_name): c.data.params.get("fingerprint", "")
              for c in kids}
        for pid, kids in by_parent.items()
    }  # fmt: skip
    picked, notes = _pick(parents, where, models, strategies, run_ids, prints)
    for parent in picked:
        for child in by_parent.get(parent.run_id, []):
            name = child.data.tags.get("dataset", child.info.run_name)
            parent.datasets[name] = DatasetRun(
                name=name,
                run_id=child.info.run_id,
                status=child.info.status,
                metrics=dict(child.data.metrics),
                tags=dict(child.data.tags),
            )
    name_variants(picked)
    return Collection(
        uri=mask(uri),
        experiment=experiment,
        experiment_id=exp.experiment_id,
        runs=picked,
        notes=notes,
    )


IGNORED_PARAMS = (
    *("tracking.", "telemetry.", "plan.", "hydra."),
    *("outputs_root", "output_dir", "verbose", "rerun", "offline", "plan_only"),
)
"""Params that never tell two evaluations apart (where they are logged, how chatty)."""


def name_variants(runs: list[ParentRun]) -> None:
    """Give each run sharing its model and strategy with another shown run the settings whose
    values differ between them (what the fingerprints saw: limit, few-shot, the checkpoint's
    path, seed, batch size, ...), so that no two rows read the same."""
    groups: dict[tuple[str, str], list[ParentRun]] = {}
    for run in runs:
        groups.setdefault((run.model, run.strategy), []).append(run)
    for group in groups.values():
        if len(group) < 2:
            continue
        keys = sorted({k for r in group for k in r.params if not k.startswith(IGNORED_PARAMS)})
        differ = [k for k in keys if len({r.params.get(k, "") for r in group}) > 1]
        for run in group:
            parts = [f"{k.removeprefix('dataset.')}={run.params.get(k, '-')}" for k in differ]
            run.variant = ", ".join(parts) or f"run {run.run_id[:8]}"


def _pick(
    parents: list[Any],
    where: str,
    models: list[str] | None,
    strategies: list[str] | None,
    run_ids: list[str] | None,
    prints: dict[str, dict[str, str]],
) -> tuple[list[ParentRun], list[str]]:
    """Filter the parents (newest first) and keep the latest ended one of each evaluation: a
    model, a strategy, a checkpoint path and its datasets' fingerprints (which change with
    limit, few-shot, weights, seed, ...). Returns the runs and notes on what was asked for but
    has no run."""
    if run_ids:
        known = {r.info.run_id: r for r in parents}
        missing = [i for i in run_ids if i not in known]
        if missing:
            raise ReportError(
                f"run id(s) {', '.join(missing)} are not parent runs of {where}: --runs takes "
                "the ids of harness's parent runs (one per model and strategy). Fix: copy them "
                "from the MLflow UI's runs table or from a report's run column"
            )
        chosen = [_parent(known[i]) for i in dict.fromkeys(run_ids)]
        for run in chosen:
            run.fingerprints = prints.get(run.run_id, {})
        return chosen, []
    shown = [
        _parent(r)
        for r in parents
        if r.info.status in SHOWN_STATUSES
        and (not models or r.data.tags.get("model") in models)
        and (not strategies or r.data.tags.get("strategy") in strategies)
    ]
    if not shown:
        asked = {"--model": models, "--strategy": strategies}
        filters = " ".join(f"{k} {','.join(v)}" for k, v in asked.items() if v) or "no filter"
        seen = sorted({f"{p.model}/{p.strategy}" for p in map(_parent, parents)})
        raise ReportError(
            f"no FINISHED or FAILED run in {where} matches {filters}: a report shows ended runs. "
            f"Fix: drop or change the filter (runs there: {', '.join(seen)}), or name runs with "
            "--runs ID..."
        )
    notes = []
    for wanted, tag in ((models, "model"), (strategies, "strategy")):
        found = {getattr(r, tag) for r in shown}
        for name in wanted or []:
            if name not in found:
                notes.append(f"--{tag} {name}: no FINISHED or FAILED run in {where}")
    latest: dict[tuple[Any, ...], ParentRun] = {}
    for run in shown:  # newest first: the first of each evaluation is the latest
        run.fingerprints = prints.get(run.run_id, {})
        pretrained = run.params.get("model.pretrained", "")
        key = (run.model, run.strategy, pretrained, tuple(sorted(run.fingerprints.items())))
        if key in latest:
            latest[key].older.append(run.run_id)
        else:
            latest[key] = run
    ordered = sorted(latest.values(), key=lambda r: (r.model, r.strategy, -r.start_time))
    return ordered, notes
