"""Runs read from MLflow for a comparison: a parent run by id or by a ``model=...`` selector,
its summary and each dataset's result and samples downloaded as a run directory's files."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from harness.compare.samples import CompareError
from harness.record.provenance import recorded_checkpoint
from harness.record.rundir import RunDirectory
from harness.secrets import mask

ENDED = ("FINISHED", "FAILED")
"""Parent runs a selector picks: ended ones (a RUNNING one may still be writing)."""


class MlflowRuns:
    """One MLflow store and experiment, read through ``MlflowClient``."""

    def __init__(self, uri: str, experiment: str) -> None:
        from mlflow.tracking import MlflowClient

        from harness.console import route_library_logs
        from harness.tracking.names import mlflow_defaults

        mlflow_defaults()
        # its download progress bars would bury the comparison on the console
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        route_library_logs("mlflow")
        self.uri = uri
        self.experiment = experiment
        self.client = MlflowClient(tracking_uri=uri)

    def _experiment_id(self) -> str:
        try:
            found = self.client.get_experiment_by_name(self.experiment)
        except Exception as err:  # a server that is down, a URI MLflow does not know
            raise CompareError(
                f"cannot read the MLflow store at {mask(self.uri)} ({type(err).__name__}): a "
                "run id or selector is looked up there. Fix: start the server, or name another "
                "store with --tracking-uri, or name run directories instead"
            ) from None
        if found is None:
            raise CompareError(
                f"experiment {self.experiment!r} does not exist at {mask(self.uri)}: run ids "
                "and selectors are looked up in it. Fix: name it with --experiment NAME"
            )
        return str(found.experiment_id)

    def latest(self, selector: dict[str, str], ref: str) -> str:
        """The id of the latest ended parent run matching ``selector``."""
        parents = [
            r
            for r in self.client.search_runs(
                [self._experiment_id()],
                order_by=["attributes.start_time DESC"],
                max_results=1000,
            )
            if "mlflow.parentRunId" not in r.data.tags and r.info.status in ENDED
        ]
        for run in parents:
            if _matches(run, selector):
                return str(run.info.run_id)
        seen = sorted(
            {
                f"model={r.data.tags.get('model')},strategy={r.data.tags.get('strategy')}"
                for r in parents
            }
        )
        raise CompareError(
            f"no FINISHED or FAILED run in experiment {self.experiment!r} at {mask(self.uri)} "
            f"matches {ref!r}: a selector names the latest ended run of a model, strategy or "
            f"checkpoint. Fix: pick one of the runs there ({'; '.join(seen) or 'none'}) or name "
            "a run id"
        )

    def run_name(self, run_id: str) -> str:
        """The MLflow run's name."""
        return str(self.client.get_run(run_id).info.run_name or "")

    def download(self, run_id: str, ref: str, into: Path) -> Path:
        """The parent run's summary and each dataset child's result and samples, downloaded
        into ``into`` laid out as a run directory; returns ``into``."""
        try:
            parent = self.client.get_run(run_id)
        except Exception:
            parent = None
        if parent is None or "mlflow.parentRunId" in parent.data.tags:
            raise CompareError(
                f"run {ref!r} is no harness parent run at {mask(self.uri)}: a RUN is a run "
                "directory, an MLflow parent run id or a selector such as model=tiny_char. Fix: "
                "copy the id from the MLflow UI or the report's run column"
            )
        target = RunDirectory(into)
        target.results_dir.mkdir(parents=True, exist_ok=True)
        target.samples_dir.mkdir(parents=True, exist_ok=True)
        self._fetch(run_id, target.summary.name, into)
        children = self.client.search_runs(
            [parent.info.experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{run_id}'",
            max_results=1000,
        )
        for child in children:
            name = child.data.tags.get("dataset", child.info.run_name)
            result = target.dataset_result(name)
            samples = target.dataset_samples(name)
            self._fetch(child.info.run_id, result.name, result.parent)
            # a file is downloaded into dst_path itself, not under its artifact folder
            self._fetch(child.info.run_id, f"{target.SAMPLES}/{samples.name}", samples.parent)
        return into

    def _fetch(self, run_id: str, artifact: str, into: Path) -> None:
        """Download one artifact if the run has it (a dataset without samples has none)."""
        import mlflow.artifacts

        try:
            mlflow.artifacts.download_artifacts(
                run_id=run_id,
                artifact_path=artifact,
                dst_path=str(into),
                tracking_uri=self.uri,
            )
        except Exception:  # absent: the reader says what is missing
            return


def _matches(run: Any, selector: dict[str, str]) -> bool:
    tags, params = run.data.tags, run.data.params
    for key, wanted in selector.items():
        if key == "checkpoint":
            # as typed for the run, or as the run resolved it (the report's row key)
            known = (params.get("model.pretrained", ""), recorded_checkpoint(tags, params))
            if not any(_same_checkpoint(value, wanted) for value in known):
                return False
        elif tags.get(key) != wanted:
            return False
    return True


def _same_checkpoint(typed: str, wanted: str) -> bool:
    if not typed:
        return False
    if typed == wanted or typed.rstrip("/").endswith("/" + wanted.strip("/")):
        return True
    try:
        return Path(typed).resolve() == Path(wanted).resolve()
    except OSError:
        return False
