"""Read a harness experiment back from MLflow: the parent run of each evaluation and the child
run of each of its datasets, through ``MlflowClient`` only (no reading of the store's files).

The runs' types are in harness/report/runs.py; the documents behind each figure come from the
result each child run holds (harness/report/documents.py); the variant of each row from
harness/report/variant.py.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from harness.report.documents import read_documents
from harness.report.runs import Collection, DatasetRun, ParentRun, ReportError
from harness.report.variant import name_variants

__all__ = ["Collection", "DatasetRun", "ParentRun", "ReportError", "collect", "default_target"]

SHOWN_STATUSES = ("FINISHED", "FAILED")
"""Parent runs a report picks by default: ended runs (a RUNNING one may still be writing)."""

# An unreachable server must fail in seconds with our message, not after MLflow's minutes of
# retries (the same settings as harness/tracking.py); reading each dataset's result draws no
# progress bar on the console.
_HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}


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
        tags=dict(tags),
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
                artifact_uri=str(child.info.artifact_uri or ""),
            )
    read_documents(uri, [d for p in picked for d in p.datasets.values()])
    variants = name_variants(picked)
    for run in picked:
        named = variants.get(run.run_id)
        if named is not None:
            run.variant, run.full_variant = named.short, named.full
    return Collection(
        uri=mask(uri),
        experiment=experiment,
        experiment_id=exp.experiment_id,
        runs=picked,
        notes=notes,
    )


def _pick(
    parents: list[Any],
    where: str,
    models: list[str] | None,
    strategies: list[str] | None,
    run_ids: list[str] | None,
    prints: dict[str, dict[str, str]],
) -> tuple[list[ParentRun], list[str]]:
    """Filter the parents (newest first) and keep the latest ended one of each evaluation: a
    model, a strategy, a checkpoint (its resolved path and content hash, however it was typed)
    and its datasets' fingerprints (which change with limit, few-shot, weights, seed, ...).
    Returns the runs and notes on what was asked for but has no run."""
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
        checkpoint = (run.checkpoint, run.checkpoint_hash)
        key = (run.model, run.strategy, checkpoint, tuple(sorted(run.fingerprints.items())))
        if key in latest:
            latest[key].older.append(run.run_id)
        else:
            latest[key] = run
    ordered = sorted(latest.values(), key=lambda r: (r.model, r.strategy, -r.start_time))
    return ordered, notes
