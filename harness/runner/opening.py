"""A run that opens and evaluates: its directory, events, stored results, tracking and
telemetry (``open_run``), then the engine loaded once and every dataset on it
(``evaluate_resident``)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from harness import console
from harness.config.schema import RunConfig
from harness.console import say
from harness.errors import ConfigError
from harness.planning.plan import Plan
from harness.runner.checked import refuse_used_directory, resolve_output_dir

if TYPE_CHECKING:
    from harness.evaluation.loop import Pending
    from harness.record.events import EventLog
    from harness.record.outcome import DatasetOutcome
    from harness.record.rundir import RunDirectory
    from harness.record.store import ResultStore
    from harness.telemetry.session import Telemetry
    from harness.tracking import Tracker


@dataclass
class OpenRun:
    """A run that has started: its directory, event log, stored results, tracking, telemetry."""

    run_dir: RunDirectory
    """Where the run's files go."""
    events: EventLog
    """Its ``events.jsonl``, and the listeners told of each event."""
    store: ResultStore
    """The results stored across runs (resume)."""
    work: dict[str, Pending]
    """Every dataset, keyed, with its stored result where there is one."""
    tracker: Tracker
    """The MLflow parent run (or none)."""
    telemetry: Telemetry
    """GPU telemetry, sampling since before the load."""


def check_space(run_cfg: RunConfig, datasets: dict[str, Any], folders: list[Path]) -> None:
    """Refuse, before loading, a run whose files the disk cannot hold (harness/record/space.py).

    Raises:
        ConfigError: a folder's file system has less room than the run writes.
    """
    from harness.config.schema import TrackingBackend
    from harness.evaluation.tasks import doc_count
    from harness.record.space import needed_bytes, space_problems

    tracking = run_cfg.tracking
    here = tracking.backend == TrackingBackend.mlflow and tracking.uri.startswith("sqlite:")
    if here:
        folders = [*folders, Path(tracking.uri.removeprefix("sqlite:///")).resolve().parent]
    docs = {name: doc_count(d) for name, d in datasets.items()}
    problems = space_problems(folders, needed_bytes(docs, run_cfg.log_samples, here))
    if problems:
        raise ConfigError(problems)


def sample_problems(datasets: dict[str, Any]) -> list[str]:
    """Each ``dataset.<name>.samples`` index past the end of a task's evaluated split: lm-eval
    asserts it only after the model has loaded (``AssertionError`` in ``simple_evaluate``)."""
    from harness.evaluation.tasks import leaf_tasks

    problems = []
    for name, prepared in datasets.items():
        wanted = prepared.config.samples
        if not wanted:
            continue
        for leaf in leaf_tasks(prepared.task):
            try:
                count = len(leaf.eval_docs)
            except Exception:  # a split that cannot be counted: lm-eval judges it
                continue
            outside = sorted({int(i) for i in wanted if int(i) >= count})
            if outside:
                task = getattr(getattr(leaf, "config", None), "task", name)
                problems.append(
                    f"dataset.{name}.samples={list(wanted)}: index(es) {outside} outside task "
                    f"{task!r}, which has {count} documents (0 to {count - 1}). Fix: "
                    f"dataset.{name}.samples with indices below {count}."
                )
    return problems


def open_run(cfg: DictConfig, run_cfg: RunConfig, plan: Plan, started_at: float) -> OpenRun:
    """Everything before the model loads: the run directory (config as typed, the plan), every
    dataset's task and data, what is stored already, the MLflow parent run (started at
    ``started_at``, the run's own start), telemetry."""
    from harness.evaluation.generation_room import check_generation_room
    from harness.evaluation.loop import work_list
    from harness.evaluation.served import check_served
    from harness.evaluation.tasks import prepare_datasets
    from harness.record.events import EventLog
    from harness.record.rundir import RunDirectory, mask_hydra_files
    from harness.record.shared_name import warn_shared_name
    from harness.record.store import ResultStore
    from harness.secrets import mask_tree
    from harness.telemetry.session import Telemetry
    from harness.tracking import Tracker, fresh_run_uid, parent_run_name, parent_tags
    from harness.tracking.rundir import parent_params

    run_dir = RunDirectory(resolve_output_dir(run_cfg))
    mask_hydra_files()  # Hydra's .hydra/*.yaml hold the overrides as typed
    typed = mask_tree(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True))
    resumed = refuse_used_directory(run_dir, typed)  # one run, one directory: or refused
    if resumed:
        say(f"resuming the run in {run_dir.root} (the same config; stored datasets are reused)")
    uid = fresh_run_uid(run_dir.root)  # names the run in MLflow wherever its directory goes
    events = EventLog(run_dir.events)
    import socket

    events.emit(
        "planned",
        model=plan.model,
        strategy=plan.strategy,
        fits=plan.fits,
        run_uid=uid,
        pid=os.getpid(),  # replay tells a run still going from one that was killed
        host=socket.gethostname(),
    )
    console.route_library_logs("datasets", "huggingface_hub")
    datasets = prepare_datasets(run_cfg)  # a task or its data missing: said before config.yaml
    outside = sample_problems(datasets)  # lm-eval's assertion, before the load
    if outside:
        raise ConfigError(outside)
    check_generation_room(run_cfg, plan, datasets)  # lm-eval's assertion, before the load
    check_served(run_cfg, plan, datasets)  # an endpoint: what it cannot answer, by name
    store = ResultStore.of_model(Path(run_cfg.outputs_root).resolve(), plan.model)
    warn_shared_name(store.root, plan)  # another checkpoint's results under this name: said
    check_space(run_cfg, datasets, [run_dir.root, store.root])
    run_dir.write_config(typed)  # the config as typed; the plan beside it
    run_dir.write_plan(plan.to_dict())
    work = work_list(run_cfg, plan, datasets, store)
    # MLflow off this process; a resumed run reopens its parent run (one parent per run uid)
    tracker = Tracker(run_cfg.tracking, uid=uid, own_process=True, resume=resumed)
    telemetry = Telemetry.start(run_cfg.telemetry, plan)  # before the load: phase `load`
    events.listeners.append(telemetry.on_event)
    tracker.start(
        run_name=parent_run_name(plan.model, plan.strategy, list(run_cfg.dataset), uid),
        params=parent_params(typed, plan.to_dict()),
        tags=parent_tags(plan.model, plan.strategy, run_dir.root),
        start_time=started_at,  # MLflow's start is the run's, however late the worker is
    )
    return OpenRun(run_dir, events, store, work, tracker, telemetry)


def evaluate_resident(
    opened: OpenRun, run_cfg: RunConfig, plan: Plan, chatty: bool
) -> tuple[list[DatasetOutcome], float, dict[str, Any]]:
    """Load the engine once (unless every result is stored) and evaluate every dataset on it.

    Returns the outcomes, the load time and the engine's facts. The engine is closed, and
    telemetry stopped, whatever happens; an interrupted run ends KILLED in MLflow and events.
    """
    from harness.evaluation.loop import evaluate_all
    from harness.runner.memory import check_loaded_memory

    events, tracker, telemetry = opened.events, opened.tracker, opened.telemetry
    engine, load_time, engine_facts = None, 0.0, {}
    try:
        if any(item.stored is None for item in opened.work.values()):
            from harness.engines import build_engine
            from harness.service.attach import attach_target, attached_engine

            # a live service of this model and deployment: attached to, nothing loads
            target = attach_target(plan, run_cfg.outputs_root) if run_cfg.attach else None
            if target is None:
                say(f"loading {plan.model} ({plan.strategy}) ...")
                console.route_library_logs("transformers")
            events.emit("load_started")
            load_start = time.perf_counter()
            if target is not None:
                engine = attached_engine(plan, target)
            else:
                engine = build_engine(plan, on_cluster=telemetry.follow_cluster)
            load_time = time.perf_counter() - load_start
            events.emit("loaded", load_time_s=round(load_time, 4))
            say(f"loaded {plan.model} in {load_time:.1f}s", show=chatty)  # the summary has it
            check_loaded_memory(engine, plan, events.emit)  # the planner checked on every run
            tracker.log_metrics({"load_time_s": round(load_time, 4)})  # as summary.json has it
        else:
            say("every dataset has a stored result: no model to load (rerun=true forces)")
        outcomes = evaluate_all(
            engine, opened.work, run_cfg, plan, opened.run_dir, opened.store, tracker, events.emit
        )
        engine_facts = engine.describe() if engine is not None else {}
    except BaseException as err:
        tracker.end(status="KILLED")
        tracker.close()
        events.emit("run_done", status="KILLED", error=type(err).__name__)
        raise
    finally:
        telemetry.stop()  # first: the other nodes' samplers live on the engine's Ray cluster
        if engine is not None:
            engine.close()
    return outcomes, load_time, engine_facts
