"""Each job of a sweep composed and planned before anything is submitted, and grouped by the
resources its plan and tier need."""

from __future__ import annotations

import copy
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.errors import ConfigError

if TYPE_CHECKING:
    from omegaconf import DictConfig

    from harness.config.schema import RunConfig, TierConfig
    from harness.planning.plan import Plan

log = logging.getLogger(__name__)

MAX_NUM_TIMEOUT_CAP = 10
"""At most this many requeues after a time limit, whatever the config says."""


@dataclass
class SweepJob:
    """One job of the sweep, composed and planned before anything is submitted."""

    index: int
    """Hydra's job number (``hydra.job.num``)."""
    overrides: list[str]
    run_dir: Path
    model: str = "?"
    strategy: str = "?"
    """The planned strategy (what ``strategy=auto`` chose)."""
    tier: str = "?"
    """The planned tier (what ``tier=auto`` chose)."""
    plan_text: str = ""
    plan: dict[str, Any] | None = None
    problems: list[str] = field(default_factory=list)
    bad_input: bool = False
    """Whether a problem is bad input (the config's keys, values or rules, the launcher's values),
    not only that the plan does not fit: a refused plan-only sweep exits 2, as a run does."""
    sealed: list[str] = field(default_factory=list)
    """The overrides as submitted: each secret read from the environment (``secret_env``)."""
    params: dict[str, Any] = field(default_factory=dict)
    """Every launcher key of this job, resolved: its plan's and tier's resources where the
    config left them null."""
    notes: list[str] = field(default_factory=list)
    tracking: Any = None
    """The job's TrackingConfig."""

    def label(self) -> str:
        return f"job {self.index} ({self.model}/{self.strategy}, tier {self.tier})"


def job_config(loader: Any, master: DictConfig, overrides: Sequence[str], index: int) -> DictConfig:
    """The composed config of one job of the sweep, as the job itself will compose it."""
    from omegaconf import open_dict

    cfg = loader.load_sweep_config(master, list(overrides))
    with open_dict(cfg.hydra.job):
        cfg.hydra.job.num = index
        cfg.hydra.job.id = f"job_id_for_{index}"
    return cfg


def task_config(cfg: DictConfig) -> DictConfig:
    """The run's config without its ``hydra`` node, as Hydra hands it to the task."""
    from omegaconf import open_dict, read_write

    task = copy.deepcopy(cfg)
    with read_write(task), open_dict(task):
        del task["hydra"]
    return task


def tier_of(run: RunConfig, plan: Plan) -> TierConfig:
    """The tier the job runs on: the one ``tier=auto`` picked, else the job's own."""
    if run.tier.auto:
        from harness.planning.auto import load_tier

        return load_tier(plan.tier)
    return run.tier


def job_resources(launcher: dict[str, Any], plan: Plan, tier: TierConfig) -> dict[str, Any]:
    """The launcher keys of one job: each null resource key taken from its plan and tier.

    GPUs and nodes are the plan's (its GPUs spread over its nodes, one task per node); time,
    partition and array parallelism are the tier's; CPUs and memory are the tier's, scaled by
    the share of a node's GPUs the job takes (tp4 on an 8-GPU tier gets half its CPUs and host
    memory, so that two such jobs can share a node). A key set in the launcher config (or on the
    command line, ``hydra.launcher.mem_gb=64``) is kept as it is.
    """
    nodes = max(1, plan.nodes_needed)
    gpus = math.ceil(plan.gpus_needed / nodes) if plan.device == "cuda" else 0
    share = gpus / tier.gpus_per_node if gpus and tier.gpus_per_node else 1.0
    memory = round(tier.host_memory_gib * share, 1)
    derived: dict[str, Any] = {
        "gpus_per_node": gpus or None,
        "nodes": nodes,
        "tasks_per_node": 1,
        "cpus_per_task": max(1, math.floor(tier.cpus_per_task * share)),
        "mem_gb": int(memory) if memory == int(memory) else memory,
        "timeout_min": tier.time_limit_min,
        "partition": tier.partition,
        "array_parallelism": max(1, tier.max_concurrent_jobs),
    }
    out = dict(launcher)
    out.pop("_target_", None)
    for key, value in derived.items():
        if out.get(key) is None:
            out[key] = value
    return out


def launcher_problems(params: dict[str, Any]) -> list[str]:
    """Launcher values no job could run with, or that would write a secret into the sweep
    directory (submitit writes them into each job's script)."""
    from harness.secrets import mask

    problems = []
    for key, value in params.items():
        text = json.dumps(value, default=str)
        if mask(text) != text:
            problems.append(
                f"hydra.launcher.{key}={mask(text)} holds a secret, which submitit writes into "
                "the job's script in the sweep directory. Fix: export it in the shell that "
                "submits the sweep (the jobs get its environment) and leave it out of the "
                "launcher's settings."
            )
    n = params.get("max_num_timeout", 0)
    if not isinstance(n, int) or not 0 <= n <= MAX_NUM_TIMEOUT_CAP:
        problems.append(
            f"hydra.launcher.max_num_timeout={n}: requeues after a time limit must be between 0 "
            f"and {MAX_NUM_TIMEOUT_CAP}, so that a job that never finishes ends. Fix: "
            "hydra.launcher.max_num_timeout=2, or a longer tier.time_limit_min."
        )
    for key in ("timeout_min", "cpus_per_task", "nodes", "tasks_per_node", "array_parallelism"):
        value = params.get(key)
        if value is not None and value < 1:
            problems.append(f"hydra.launcher.{key}={value}: must be at least 1.")
    if params.get("mem_gb") is not None and params["mem_gb"] <= 0:
        problems.append(f"hydra.launcher.mem_gb={params['mem_gb']}: must be positive.")
    return problems


def measured_here(cfg: DictConfig, key: str) -> bool:
    """Whether the tier's ``key`` is read from the node where the job runs (``${machine:...}``),
    not set on the command line."""
    from omegaconf import OmegaConf

    return bool(OmegaConf.is_interpolation(cfg.tier, key))


def within_share(run: RunConfig, plan: Plan, params: dict[str, Any], measured: set[str]) -> Plan:
    """The plan a local job makes of itself with ``tier=local``, where the figures it measures
    (``measured``: those the command line did not set) are its share of the node (its cores'
    affinity, ``HARNESS_JOB_MEMORY_GIB``): the sweep shows that one."""
    import dataclasses

    from harness.planning.preflight import checked_plan

    tier = run.tier
    cpus = int(params["cpus_per_task"]) if "cpus_per_task" in measured else tier.cpus_per_task
    memory = float(params["mem_gb"]) if "host_memory_gib" in measured else tier.host_memory_gib
    shared = dataclasses.replace(tier, cpus_per_task=cpus, host_memory_gib=memory)
    try:
        return checked_plan(dataclasses.replace(run, tier=shared))
    except ConfigError:  # said by the plan of the whole node already
        return plan


def plan_job(
    cfg: DictConfig, index: int, overrides: Sequence[str], kind: str = "slurm"
) -> SweepJob:
    """Compose, validate and plan one job, collecting every problem instead of raising.

    The same checks a run makes before it loads a model (``harness.planning.preflight``), less
    the ones that belong to the node that will run it (its GPUs, the engine installed there).
    """
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from harness.config.keys import composed_key_problems
    from harness.config.schema import to_run_config

    job = SweepJob(index=index, overrides=list(overrides), run_dir=Path("."))
    try:
        job.run_dir = Path(str(cfg.hydra.sweep.dir)) / str(cfg.hydra.sweep.subdir)
        launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
        assert isinstance(launcher, dict)
        job.params = {str(k): v for k, v in launcher.items()}
        unknown = composed_key_problems(cfg)
        if unknown:
            job.problems, job.bad_input = unknown, True
            return job
        run = to_run_config(task_config(cfg))
    except OmegaConfBaseException as err:
        job.problems, job.bad_input = [f"the configuration does not resolve: {err}"], True
        return job
    job.model, job.strategy, job.tier = run.model.name, run.strategy.name, run.tier.name
    job.tracking = run.tracking
    from harness.planning.preflight import checked_plan

    try:
        plan = checked_plan(run)
    except ConfigError as err:
        job.problems, job.bad_input = list(err.problems), True
        return job
    tier = tier_of(run, plan)
    composed = job.params
    job.params = job_resources(composed, plan, tier)
    node_problems: list[str] = []
    if kind == "local":  # packed onto this node: its cores and memory, not the tier's
        from harness.sweep.packing import Need, NodePool, local_resources

        node = NodePool.this_node()
        job.params = local_resources(composed, job.params, node)
        node_problems = node.problems(Need.of(job.params), f"job {index}")
        if tier.detected and not node_problems:  # the job plans itself within its share
            measured = {k for k in ("cpus_per_task", "host_memory_gib") if measured_here(cfg, k)}
            plan = within_share(run, plan, job.params, measured)
    from harness.views import format_plan_line

    job.model, job.strategy, job.tier = plan.model, plan.strategy, plan.tier
    job.plan = plan.to_dict()
    text = format_plan_line(plan).splitlines()
    cut = [i for i, line in enumerate(text) if line.endswith("problem(s):")]
    job.plan_text = "\n".join(text[: cut[0]] if cut else text)  # problems are listed apart
    job.problems = list(plan.problems) + node_problems
    launcher = launcher_problems(job.params)
    job.problems += launcher
    job.bad_input = bool(plan.bad_input or launcher)
    if tier.detected and kind == "slurm":
        job.notes.append(
            f"tier '{tier.name}' is the machine that submits the sweep: its figures sized the "
            "request. Name the tier of the nodes you submit to (small..xlarge, or tier=auto)."
        )
    return job


def prepare_tracking(jobs: Sequence[SweepJob]) -> None:
    """Create every local MLflow store (SQLite) and experiment the jobs log to, once, before any
    job starts: jobs that start together would each create it, and all but one would fail
    ("duplicate column name") and run untracked."""
    from harness.config.schema import TrackingBackend
    from harness.tracking import local_uri
    from harness.tracking.names import store_lock

    stores = {}
    for job in jobs:
        t = job.tracking
        if t is not None and t.backend == TrackingBackend.mlflow and t.uri.startswith("sqlite:"):
            stores[(local_uri(t.uri), t.experiment)] = t.artifact_location
    if len(jobs) < 2 or not stores:
        return
    from harness.console import route_library_logs

    route_library_logs("mlflow")
    from mlflow.tracking import MlflowClient

    quiet = [logging.getLogger(n) for n in ("mlflow", "alembic")]  # its table-creation INFO lines
    levels = [q.level for q in quiet]
    for q in quiet:
        q.setLevel(logging.WARNING)
    try:
        for (uri, experiment), location in stores.items():
            try:
                with store_lock(uri):  # a run started beside the sweep may be creating it too
                    client = MlflowClient(tracking_uri=uri)
                    if client.get_experiment_by_name(experiment) is None:
                        where = Path(location).resolve().as_uri() if location else None
                        client.create_experiment(experiment, artifact_location=where)
            except Exception as err:  # tracking never stops a sweep; each job reports its own
                log.warning("could not prepare the MLflow store %s: %s", uri, err)
    finally:
        for q, level in zip(quiet, levels, strict=True):
            q.setLevel(level)


@dataclass
class Group:
    """Jobs of one resource shape: one job array."""

    number: int
    params: dict[str, Any]
    jobs: list[SweepJob]
    script: Path | None = None
    """The sbatch script submitit generates for this group (plan-only and --test-only)."""

    def resources(self) -> str:
        """The group's resources in sbatch's words."""
        p = self.params
        words = [f"nodes={p['nodes']}", f"ntasks-per-node={p['tasks_per_node']}"]
        if p.get("gpus_per_node"):
            words.append(f"gpus-per-node={p['gpus_per_node']}")
        words += [
            f"cpus-per-task={p['cpus_per_task']}",
            f"mem={p['mem_gb']}GB",
            f"time={p['timeout_min']}min",
            f"partition={p.get('partition') or '(default)'}",
            f"at once={p['array_parallelism'] or 'as the node has room'}",
        ]
        return " ".join(words)


def shape_key(params: dict[str, Any]) -> str:
    return json.dumps(params, sort_keys=True, default=str)


def group_jobs(jobs: Sequence[SweepJob]) -> list[Group]:
    """Jobs grouped by their launcher parameters, in the order their first job comes."""
    groups: dict[str, Group] = {}
    for job in jobs:
        key = shape_key(job.params)
        if key not in groups:
            groups[key] = Group(number=len(groups) + 1, params=job.params, jobs=[])
        groups[key].jobs.append(job)
    return list(groups.values())


def swept(jobs: Sequence[SweepJob]) -> dict[int, str]:
    """Each job's overrides, less those every job of the sweep shares."""
    common = set.intersection(*(set(j.overrides) for j in jobs)) if len(jobs) > 1 else set()
    return {
        j.index: " ".join(o for o in j.overrides if o not in common) or "(no overrides)"
        for j in jobs
    }


def format_groups(
    groups: Sequence[Group], kind: str, names: dict[int, str], plan_only: bool = False
) -> str:
    jobs = sum(len(g.jobs) for g in groups)
    unit = "job array" if kind == "slurm" else "group"
    lines = [f"sweep: {jobs} job(s) in {len(groups)} {unit}(s), one per resource shape"]
    for g in groups:
        lines.append(f"{unit} {g.number}: {len(g.jobs)} job(s) | {g.resources()}")
        for job in g.jobs:
            lines.append(f"  job {job.index}: {names[job.index]}")
            if job.plan_text:
                lines += [f"    {line}" for line in job.plan_text.splitlines()]
            lines += [f"    note: {n}" for n in job.notes]
        if g.script is not None and plan_only:
            lines.append(f"  sbatch script: {g.script}")
    return "\n".join(lines)


def format_refusal(jobs: Sequence[SweepJob], extra: Sequence[str] = ()) -> str:
    bad = [j for j in jobs if j.problems]
    names = swept(jobs)
    lines = []
    if bad:
        lines.append(f"{len(bad)} of {len(jobs)} job(s) cannot run:")
    for job in bad:
        lines.append(f"  {job.label()}: {names[job.index]}")
        lines += [f"    - {p}" for p in job.problems]
    lines += list(extra)
    lines.append(
        "Nothing was submitted. Fix these (or leave those jobs out) and run the sweep again."
    )
    return "\n".join(lines)


def write_plans(jobs: Sequence[SweepJob]) -> None:
    """Each planned job's ``plan.json`` in its run directory, before anything is submitted."""
    from harness.record.rundir import RunDirectory

    for job in jobs:
        if job.plan is not None:
            RunDirectory(job.run_dir).write_plan(job.plan)
