"""``python -m harness.serve model=... strategy=... tier=...``: compose and plan like a run, start
vLLM's OpenAI server with the plan's deployment, wait for it, check it, register it."""

from __future__ import annotations

import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.config.schema import RunConfig
from harness.console import say
from harness.errors import ConfigError
from harness.planning.plan import Plan
from harness.service.attach import deployment_key, find_service
from harness.service.claim import claim, end_service, same_place
from harness.service.options import ServiceConfig, needs_key
from harness.service.registry import (
    Launcher,
    ServiceEntry,
    Status,
    entry_path,
    read_entry,
    services_dir,
    this_node,
    user_name,
    write_entry,
)
from harness.service.server import (
    free_port,
    server_command,
    server_environment,
    start_server,
    startup_budget_s,
    url_host,
    wait_ready,
)
from harness.service.slurm_job import JobWatch, job_folder, job_params, submit_job, wait_listening

OFFLINE_ENV = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
LAUNCHERS: dict[str, Launcher] = {"basic": "local", "slurm": "slurm"}
"""``hydra/launcher`` choices a service takes, and where its server runs then."""


@dataclass
class Composition:
    """What the serve command's words compose: the run, and where its server runs."""

    run: RunConfig
    launcher: Launcher
    """``local`` (this node) or ``slurm`` (``hydra/launcher=slurm``: a SLURM job)."""
    launcher_params: dict[str, Any]
    """``hydra.launcher.*`` as composed (partition, setup, additional_parameters, ...)."""


def composed(
    overrides: Sequence[str], config_name: str = "config", config_dir: Path | None = None
) -> RunConfig:
    """The run the overrides compose (``composition``; ``config_name`` in ``config_dir``, by
    default harness's ``conf/config.yaml``)."""
    return composition(overrides, config_name, config_dir).run


def composition(
    overrides: Sequence[str], config_name: str = "config", config_dir: Path | None = None
) -> Composition:
    """The run the overrides compose (``conf/``, Hydra's compose API, the schema), checked as
    ``python -m harness`` checks its command line and its config, and the launcher they choose
    (``hydra/launcher=slurm`` as a sweep chooses it; else this node).

    Raises:
        ConfigError: a word or a value the run would refuse too.
    """
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from harness.config.argv import (
        check_group_choices,
        output_problems,
        required_value_problems,
    )
    from harness.config.keys import argv_key_problems, composed_key_problems
    from harness.config.schema import to_run_config
    from harness.config.store import libyaml_loading, register_configs
    from harness.paths import CONF_DIR
    from harness.sweep.plan import task_config

    words = list(overrides)
    problems = check_group_choices(words) + argv_key_problems(words)
    problems += required_value_problems(words) + output_problems(words)
    if problems:
        raise ConfigError(problems)
    register_configs()
    try:
        with (
            libyaml_loading(),
            initialize_config_dir(
                str(config_dir or CONF_DIR), version_base="1.3", job_name="harness"
            ),
        ):
            full = compose(config_name, overrides=words, return_hydra_config=True)
        choice = str(full.hydra.runtime.choices.get("hydra/launcher") or "basic")
        params = OmegaConf.to_container(full.hydra.launcher, resolve=True)
        cfg = task_config(full)
        unknown = composed_key_problems(cfg)
        if unknown:
            raise ConfigError(unknown)
        run = to_run_config(cfg)
    except ConfigError:
        raise
    except Exception as err:  # Hydra's and OmegaConf's errors: a value of the wrong type, ...
        cause = err.__cause__  # Hydra's message names the override, its cause the rule
        said = "; ".join(str(e).splitlines()[0] for e in (err, cause) if e is not None and str(e))
        said = said or type(err).__name__
        raise ConfigError(
            [
                f"the command line does not compose ({said}). Fix: the value's type or the "
                "override's syntax (`python -m harness --help` lists every key with its type)"
            ]
        ) from None
    if choice not in LAUNCHERS:
        raise ConfigError(
            [
                f"hydra/launcher={choice}: a service runs on this node or as a SLURM job. Fix: "
                "hydra/launcher=slurm, or leave hydra/launcher out (this node)"
            ]
        )
    assert isinstance(params, dict)
    return Composition(run, LAUNCHERS[choice], {str(k): v for k, v in params.items()})


def serving_plan(run: RunConfig, on_this_node: bool = True) -> Plan:
    """The run's checked plan (``planning.preflight.checked_plan``, then what the engine and
    this node cannot do, as a run checks them before loading; a SLURM job's node is checked
    there, as a sweep's job is); it must plan vLLM.

    Raises:
        ConfigError: every problem at once.
    """
    from harness.engines import engine_problems
    from harness.machine.node import detect_gpus, hardware_problems
    from harness.planning.preflight import checked_plan

    plan = checked_plan(run)
    problems = list(plan.problems)
    if plan.engine != "vllm":
        problems.append(
            f"strategy={plan.strategy} plans the {plan.engine} engine; a service is vLLM's OpenAI "
            "server. Fix: a vLLM strategy (strategy=vllm, tp2, tp4, ...)"
        )
        raise ConfigError(problems)
    if on_this_node:  # a job's node, and the vLLM installed there, are the job's to check
        problems += engine_problems(plan)
    if plan.device == "cuda" and on_this_node:
        problems += hardware_problems(plan.device, plan.gpus_needed, detect_gpus())
    if problems:
        raise ConfigError(problems)
    return plan


def new_entry(
    plan: Plan, run: RunConfig, service: ServiceConfig, launcher: Launcher = "local"
) -> ServiceEntry:
    """The registry entry of a service about to start (no pid yet; a SLURM job's address and
    port are its node's, filled in when it says where it listens)."""
    service_id = f"{plan.model}-{secrets.token_hex(3)}"
    slurm = launcher == "slurm"
    port = service.port or (0 if slurm else free_port(service.host))
    folder = services_dir(run.outputs_root)
    command = server_command(plan, service.host, port)
    env = {} if slurm else server_environment(plan)  # the job's CPUs are the job's to bind
    if run.offline:
        env.update({name: "1" for name in OFFLINE_ENV})
    key = f"sk-harness-{secrets.token_urlsafe(24)}" if needs_key(service) or slurm else None
    return ServiceEntry(
        id=service_id,
        url="" if slurm else f"http://{url_host(service.host)}:{port}/v1",
        host=service.host,
        port=port,
        node="" if slurm else this_node(),
        model=plan.model,
        model_id=command[command.index("--model") + 1],
        deployment=deployment_key(plan),
        plan=plan.to_dict(),
        command=command,
        env=env,
        log=str(folder / f"{service_id}.log"),
        uid=os.getuid(),
        user=user_name(),
        started_at=0.0,
        startup_timeout_s=service.startup_timeout_s or startup_budget_s(plan),
        api_key=key,
        launcher=launcher,
    )


def already_served(
    plan: Plan, run: RunConfig, service: ServiceConfig, launcher: Launcher = "local"
) -> ServiceEntry | None:
    """A live service of this user that serves this plan where ``service`` asks, if any."""
    target = find_service(plan, run.outputs_root)
    if target is None or target.service_id is None:
        return None
    entry = read_entry(entry_path(run.outputs_root, target.service_id))
    return entry if same_place(entry, service, launcher) else None


def start(overrides: Sequence[str], service: ServiceConfig) -> int:
    """Compose, plan, start (or reuse), wait, check and register one service; the exit code."""
    from harness import console
    from harness.views import format_plan_line

    composed_run = composition(overrides)
    run, launcher = composed_run.run, composed_run.launcher
    console.configure(run.verbose, draws_bars=False)
    plan = serving_plan(run, on_this_node=launcher == "local")
    say(format_plan_line(plan))
    params: dict[str, Any] = {}
    if launcher == "slurm":
        params = slurm_params(composed_run, plan)
    got = claim(
        run.outputs_root,
        deployment_key(plan),
        service,
        launcher,
        lambda: already_served(plan, run, service, launcher),
        lambda: new_entry(plan, run, service, launcher),
    )
    entry, path = got.entry, got.path
    if got.reused:
        say(f"service {entry.id} serves this model and deployment at {entry.url} already")
        return 0
    try:
        if launcher == "slurm":
            start_job(path, entry, params)
        else:
            start_server(entry)
            write_entry(path, entry)
            wait_ready(entry, say)
    except BaseException:  # not ready, or Ctrl-C: nothing left behind but its log
        said = end_service(entry, grace_s=10.0)
        path.unlink(missing_ok=True)
        say(f"service {entry.id} not started: {said}", show=launcher == "slurm")
        raise
    entry.status = Status.ready
    write_entry(path, entry)
    key = " (API key required: in the registry file, readable by you only)" if entry.api_key else ""
    runs = f"SLURM job {entry.job_id} on {entry.node}, " if entry.job_id else ""
    say(
        f"service {entry.id} ready at {entry.url}{key}: model {entry.model_id}, {runs}pid "
        f"{entry.pid}, log {entry.log}. Runs whose model and deployment match attach to it; "
        f"stop it with: python -m harness.serve --stop {entry.id}"
    )
    return 0


def slurm_params(composed_run: Composition, plan: Plan) -> dict[str, Any]:
    """The job's submitit parameters (``slurm_job.job_params``), checked as a sweep checks its
    launcher values.

    Raises:
        ConfigError: a launcher value no job could run with, or one holding a secret.
    """
    from harness.sweep.plan import launcher_problems, tier_of

    run = composed_run.run
    path = entry_path(run.outputs_root, "<id>")
    params = job_params(composed_run.launcher_params, plan, tier_of(run, plan), path)
    problems = launcher_problems(params)
    if plan.nodes_needed > 1:
        problems.append(
            f"strategy={plan.strategy} on tier={plan.tier} needs {plan.nodes_needed} nodes; a "
            "service runs on one node (a server over several needs the Ray cluster a run's "
            "distributed engine builds, which a service does not yet). Fix: a tier whose node "
            "has the plan's GPUs (tier=large for tp8), or run it as a sweep's job"
        )
    if problems:
        raise ConfigError(problems)
    return params


def start_job(path: Path, entry: ServiceEntry, params: dict[str, Any]) -> None:
    """Submit the entry's SLURM job, wait for it to start and its server to be ready."""
    params = {**params, "submitit_folder": str(job_folder(path) / "%j")}
    entry.job_id = submit_job(path, params)
    write_entry(path, entry)
    say(f"service {entry.id}: submitted as SLURM job {entry.job_id} ({resources(params)})")
    wait_listening(path, entry, say)
    write_entry(path, entry)
    wait_ready(entry, say, gone=JobWatch())


def resources(params: dict[str, Any]) -> str:
    """The job's resources, in a line."""
    parts = [f"{params.get('nodes', 1)} node(s)"]
    if params.get("gpus_per_node"):
        parts.append(f"{params['gpus_per_node']} GPU(s) per node")
    parts += [f"{params.get('cpus_per_task')} CPU(s)", f"{params.get('mem_gb')} GB"]
    parts.append(f"{params.get('timeout_min')} min")
    if params.get("partition"):
        parts.append(f"partition {params['partition']}")
    return ", ".join(parts)
