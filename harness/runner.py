"""One run in plain steps: the typed config, the checked plan, then open, evaluate resident,
finish and report. ``harness.app`` is the entry (Hydra composes, then calls ``run``); tests and
benchmarks call these functions directly."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from harness import console
from harness.config.schema import RunConfig, to_run_config
from harness.console import say
from harness.errors import ConfigError, HarnessError
from harness.planning.plan import Plan

if TYPE_CHECKING:
    from harness.evaluation.loop import Pending
    from harness.record.events import EventLog
    from harness.record.outcome import DatasetOutcome
    from harness.record.rundir import RunDirectory
    from harness.record.store import ResultStore
    from harness.record.summary import RunSummary
    from harness.telemetry.session import Telemetry
    from harness.tracking import Tracker

log = logging.getLogger("harness")


def set_offline(offline: bool) -> None:
    """Keep every hub client off the network; must happen before they are imported."""
    if offline:
        for key in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
            os.environ[key] = "1"


def resolve_output_dir(run: RunConfig) -> Path:
    """This run's directory: ``output_dir`` when set, else Hydra's run directory."""
    if run.output_dir:
        return Path(run.output_dir).resolve()
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir).resolve()
    raise HarnessError("output_dir is not set and no Hydra run directory exists: set output_dir.")


def make_checked_plan(run_cfg: RunConfig) -> Plan:
    """Validate the run and plan its deployment; print the plan.

    In plan-only mode the plan's problems are printed with it; in a real run every problem
    (config, deployment, memory fit, this node's GPUs) is raised at once.
    """
    from harness.engines import engine_problems
    from harness.planning.preflight import checked_plan
    from harness.views import format_plan, format_plan_line

    plan = checked_plan(run_cfg)
    if run_cfg.tier.detected:
        from harness.machine.node import this_node

        plan.notes.append(this_node().describe())
    here = run_cfg.tier.detected or not run_cfg.plan_only  # the group's GPUs are this node's
    if plan.device == "cuda" and plan.tensor_parallel_size > 1 and here:
        from harness.machine.node import tensor_parallel_link_note

        link = tensor_parallel_link_note(plan.tensor_parallel_size)
        if link:
            plan.notes.append(link)
            log.warning(link)
    table = format_plan(plan)  # a run shows one line unless verbose; plan_only, the table
    say(table if run_cfg.plan_only or run_cfg.verbose else format_plan_line(plan), record=table)
    if run_cfg.plan_only:
        return plan
    problems = list(plan.problems)
    problems += engine_problems(plan)
    if plan.device == "cuda":
        from harness.machine.node import detect_gpus, hardware_problems

        on_node = -(-plan.gpus_needed // max(plan.nodes_needed, 1))  # GPUs on each node
        problems += hardware_problems(plan.device, on_node, detect_gpus())
    if problems:
        raise ConfigError(problems)
    return plan


def write_plan_only(cfg: DictConfig, run_cfg: RunConfig, plan: Plan) -> None:
    """Plan-only's record in the run directory: ``config.yaml`` (the config as typed, masked)
    and ``plan.json`` (what it planned), as a real run writes them."""
    from harness.record.rundir import RunDirectory
    from harness.secrets import mask_tree

    run_dir = RunDirectory(resolve_output_dir(run_cfg))
    typed = mask_tree(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True))
    run_dir.write_config(typed)
    say(f"plan written to {run_dir.write_plan(plan.to_dict())}")


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


def typed_config(cfg: DictConfig) -> RunConfig:
    """The composed config as ``RunConfig``; a key the schema does not know is refused."""
    from harness.config.keys import composed_key_problems

    unknown = composed_key_problems(cfg)
    if unknown:
        raise ConfigError(unknown)
    return to_run_config(cfg)


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
    from harness.tracking import Tracker, fresh_run_uid, parent_tags
    from harness.tracking.rundir import parent_params

    run_dir = RunDirectory(resolve_output_dir(run_cfg))
    mask_hydra_files()  # Hydra's .hydra/*.yaml hold the overrides as typed
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
    check_generation_room(run_cfg, plan, datasets)  # lm-eval's assertion, before the load
    check_served(run_cfg, plan, datasets)  # an endpoint: what it cannot answer, by name
    store = ResultStore.of_model(Path(run_cfg.outputs_root).resolve(), plan.model)
    warn_shared_name(store.root, plan)  # another checkpoint's results under this name: said
    check_space(run_cfg, datasets, [run_dir.root, store.root])
    typed = mask_tree(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True))
    run_dir.write_config(typed)  # the config as typed; the plan beside it
    run_dir.write_plan(plan.to_dict())
    work = work_list(run_cfg, plan, datasets, store)
    tracker = Tracker(run_cfg.tracking, uid=uid, own_process=True)  # MLflow off this process
    telemetry = Telemetry.start(run_cfg.telemetry, plan)  # before the load: phase `load`
    events.listeners.append(telemetry.on_event)
    tracker.start(
        run_name=f"{plan.model}/{plan.strategy}",
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


def finish_run(
    opened: OpenRun,
    run_cfg: RunConfig,
    plan: Plan,
    outcomes: list[DatasetOutcome],
    timings: tuple[float, float],
    engine_facts: dict[str, Any],
) -> tuple[RunSummary, list[str]]:
    """Write telemetry, reproducibility.json and summary.json, then log them (as replay does).

    ``timings`` are the load time and the run's start (``time.perf_counter()``); the total is
    taken once everything is written, and MLflow's end time is that same instant. Returns the
    summary and what a full disk kept from being written (said at the end).
    """
    from harness.record.files import DiskFull
    from harness.record.provenance import record_run
    from harness.tracking.rundir import log_run_end, log_telemetry

    run_dir, tracker = opened.run_dir, opened.tracker
    unwritten: list[str] = []

    def keep(write: Any, *args: Any) -> Any:
        try:
            return write(*args)
        except DiskFull as err:
            unwritten.append(str(err))
            return None

    telemetry = keep(opened.telemetry.record, run_dir.root, outcomes) or {}
    fingerprints = {name: item.fingerprint for name, item in opened.work.items()}
    keep(record_run, run_dir, run_cfg, plan, engine_facts, fingerprints)
    summary = run_summary(opened, plan, outcomes, timings, engine_facts, telemetry)
    keep(run_dir.write_summary, summary)
    log_telemetry(tracker, run_dir)  # from the files just written, as replay does
    # totals, files, record: what replay logs too; the end is the run's, not the worker's
    log_run_end(tracker, run_dir, summary, end_time=summary.ended_at)
    close_record(opened, summary)
    return summary, unwritten


def run_summary(
    opened: OpenRun,
    plan: Plan,
    outcomes: list[DatasetOutcome],
    timings: tuple[float, float],
    engine_facts: dict[str, Any],
    telemetry: dict[str, Any],
) -> RunSummary:
    """The finished run's summary; its total and end are taken now (``timings``: the load time
    and the run's start, ``time.perf_counter()``)."""
    from harness.machine.node import given_resources
    from harness.record.summary import RunSummary

    load_time, started = timings
    total_time, ended_at = time.perf_counter() - started, time.time()
    return RunSummary(
        model=plan.model,
        strategy=plan.strategy,
        plan=plan.to_dict(),
        run_dir=str(opened.run_dir.root),
        engine=engine_facts,
        load_time_s=round(load_time, 4),
        total_time_s=round(total_time, 4),
        started_at=round(ended_at - total_time, 3),  # seconds since the epoch
        ended_at=round(ended_at, 3),  # seconds since the epoch: MLflow's end time (replay)
        resources=given_resources(),  # what this run was given: in a sweep, its share
        datasets={o.name: o for o in outcomes},
        telemetry=telemetry,
        tracking=opened.tracker.describe(),
    )


def close_record(opened: OpenRun, summary: RunSummary) -> None:
    """Let MLflow's worker catch up, then write ``run_done`` and close the events.

    The idle-priority worker may still be writing: its catching up comes after the run's own
    end (MLflow's end time and total_time_s leave it out), so it is measured and said.
    """
    draining = time.perf_counter()
    opened.tracker.close()
    drain = round(time.perf_counter() - draining, 3)
    opened.events.emit(
        "run_done",
        status=summary.status,
        failed=summary.failed,
        tracking_drain_s=drain,
        tracking_failure=opened.tracker.failure,  # a sweep's outcome reads it
    )
    if drain >= 1.0:
        say(f"MLflow caught up {drain:.1f}s after the run ended (not in total_time_s)")
    opened.events.close()


def report_run(
    summary: RunSummary, unwritten: list[str], tracker: Tracker, run_dir: RunDirectory
) -> int:
    """Say where the run is in MLflow, print the summary table; the exit code."""
    from harness.views import format_summary

    if tracker.failed:
        say(
            f"warning: MLflow does not hold this run whole (the warning above says why); every "
            f"result is in {run_dir.root}. Log it later: python -m harness.replay {run_dir.root}",
            err=True,
            level=logging.WARNING,
        )
    elif tracker.enabled:
        remote = tracker.uri.startswith(("http://", "https://"))
        if remote:
            say(f"runs table: {tracker.ui_url()}")
            say(f"this run: {tracker.run_url()}")
        else:  # a local store's link opens once `mlflow ui` serves it
            serve = f"mlflow ui --backend-store-uri {tracker.uri}"
            say(f"this run in MLflow: {tracker.run_url()} (after: {serve})")
    console.summarise_collapsed()  # the warnings a quiet console counted, one line each
    say(format_summary(summary.to_dict()))
    failed = [(name, summary.datasets[name]) for name in summary.failed]
    if failed:
        say(
            f"{len(failed)} of {len(summary.datasets)} datasets failed: "
            + ", ".join(f"{n} ({d.error_type}: {d.error_message})" for n, d in failed)
            + f". Details: {run_dir.dataset_error('<dataset>')}; rerun the same command "
            "to retry only those.",
            err=True,
            level=logging.ERROR,
        )
    for problem in unwritten:
        say(f"error: {problem}", err=True, level=logging.ERROR)
    return 1 if failed or unwritten else 0


def run(cfg: DictConfig) -> int:
    """Plan, load the engine once, evaluate every dataset, record everything.

    Args:
        cfg: the composed Hydra config (schema ``RunConfig``).

    Returns:
        The process exit code: 0 when every dataset succeeded, 1 when any failed; in plan-only
        mode 0 when the plan fits, 1 when it does not, 2 when the config breaks a rule.

    Raises:
        HarnessError: bad input, explained; raised before any model is loaded.
    """
    started, started_at = time.perf_counter(), time.time()
    run_cfg = typed_config(cfg)
    chatty = console.configure(run_cfg.verbose, draws_bars=not run_cfg.plan_only)
    set_offline(run_cfg.offline)
    plan = make_checked_plan(run_cfg)  # the only truth of the deployment from here on
    if run_cfg.plan_only:
        write_plan_only(cfg, run_cfg, plan)
        return 2 if plan.bad_input else 0 if plan.fits else 1  # bad input is 2 everywhere
    opened = open_run(cfg, run_cfg, plan, started_at)
    outcomes, load_time, engine_facts = evaluate_resident(opened, run_cfg, plan, chatty)
    timings = (load_time, started)
    summary, unwritten = finish_run(opened, run_cfg, plan, outcomes, timings, engine_facts)
    return report_run(summary, unwritten, opened.tracker, opened.run_dir)
