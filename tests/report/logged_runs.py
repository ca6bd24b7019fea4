"""Runs written into a real MLflow store through harness's own tracking calls, no model loaded.

Each run is logged as the live run and replay log one (harness/tracking/rundir.py): the parent's
params from the config and the plan (``parent_params``), its tags (``parent_tags``), each
dataset's child run (``open_child``, ``track_outcome`` with lm-eval's result file, whose
``n-samples`` the report reads) and the reproducibility record (``log_record``: the checkpoint's
resolved path and content hash, harness/record/provenance.py). The checkpoint is located from
the path as typed by the planner's own ``locate_pretrained``, as a run does.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path

HEADLINES = {
    "arith_mc": "acc",
    "compare_mc": "acc",
    "reverse_gen": "exact_match",
    "successor_gen": "exact_match",
    "story_ppl": "word_perplexity",
    "succ_exec": "acc",
}
"""Six bundled datasets and the headline metric each logs."""

DATASET_KEYS = ("apply_chat_template", "fewshot_as_multiturn", "gen_kwargs", "metadata")
DATASET_KEYS += ("predict_only", "samples", "system_instruction", "task_path")
"""A dataset's settings a run leaves unset (None), as the config holds them."""


@dataclass
class Dataset:
    """One dataset of a run: its settings and what it gave."""

    limit: int
    fewshot: int | None = None
    value: float | None = 0.5
    """The headline metric; None: the dataset failed."""


@dataclass
class Run:
    """One run to log: a model, a checkpoint as typed, top-level settings, datasets."""

    pretrained: str
    datasets: dict[str, Dataset]
    seed: int | None = None
    model: str = "ck"
    extra: dict[str, object] = field(default_factory=dict)


def _config(run: Run) -> dict:
    datasets = {
        name: {
            "task": name,
            "limit": float(d.limit),
            "num_fewshot": d.fewshot,
            **dict.fromkeys(DATASET_KEYS),
        }
        for name, d in run.datasets.items()
    }
    return {
        "model": {"name": run.model, "pretrained": run.pretrained, "revision": None},
        "strategy": {"name": "single", "engine": "hf", "batch_size": 32},
        "dataset": datasets,
        "seed": run.seed,
        "apply_chat_template": False,
        "outputs_root": "outputs",
        **run.extra,
    }


def _result(name: str, d: Dataset) -> dict:
    metric = HEADLINES[name]
    entry = {"alias": name, f"{metric},none": d.value}
    if metric != "word_perplexity":
        entry[f"{metric}_stderr,none"] = 0.05
    return {"results": {name: entry}, "n-samples": {name: {"original": 200, "effective": d.limit}}}


def log_run(run: Run, uri: str, cwd: Path, folder: Path) -> None:
    """Log ``run`` into the store at ``uri``; its files (results, record) go under ``folder``;
    the checkpoint path as typed is taken from ``cwd``."""
    from harness.config.schema import TrackingConfig
    from harness.planning.location import locate_pretrained
    from harness.record.outcome import DatasetOutcome
    from harness.record.provenance import checkpoint_identity
    from harness.tracking import Tracker, parent_run_name, parent_tags
    from harness.tracking.rundir import log_record, open_child, parent_params, track_outcome

    folder.mkdir(parents=True)
    resolved = locate_pretrained(run.pretrained, cwd=cwd).pretrained
    uid = uuid.uuid4().hex
    artifacts = Path(uri.removeprefix("sqlite:///")).parent / "artifacts"  # beside the store
    config = TrackingConfig(uri=uri, experiment="harness", artifact_location=str(artifacts))
    tracker = Tracker(config, uid=uid)
    plan = {"engine": "hf", "model_facts": {"name": run.model, "pretrained": resolved}}
    tracker.start(
        run_name=parent_run_name(run.model, "single", list(run.datasets), uid),
        params=parent_params(_config(run), plan),
        tags=parent_tags(run.model, "single", folder),
    )
    for name, d in run.datasets.items():
        settings = {"task": name, "num_fewshot": d.fewshot, "limit": float(d.limit)}
        fingerprint = f"{resolved}|{name}|{d.limit}|{d.fewshot}|{run.seed}|{run.extra}"
        print_ = hashlib.sha256(fingerprint.encode()).hexdigest()[:20]
        child = open_child(tracker, name, settings, print_, False)
        outcome = DatasetOutcome(name=name, task=name, eval_time_s=1.0, requests=d.limit)
        if d.value is None:
            outcome.status, outcome.error_type, outcome.error_message = "failed", "E", "broke"
        else:
            result = folder / f"{name}.json"
            result.write_text(json.dumps(_result(name, d)))
            outcome.metrics = {k.partition(",")[0]: v for k, v in _result(name, d)["results"][
                name].items() if "," in k}  # fmt: skip
            outcome.result_file = str(result)
        track_outcome(tracker, child, outcome)
    record = folder / "reproducibility.json"
    record.write_text(
        json.dumps(
            {
                "harness": {"version": "0", "git": None},
                "host": {"name": "h"},
                "python": "3.11",
                "libraries": {},
                "cuda": {},
                "slurm": {},
                "checkpoint": checkpoint_identity(resolved),
            }
        )
    )
    log_record(tracker, record)
    tracker.log_metrics({"total_time_s": 5.0})
    tracker.end()
    tracker.close()
    assert not tracker.failed, tracker.failure
