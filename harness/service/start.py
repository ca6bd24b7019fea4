"""``python -m harness.serve model=... strategy=... tier=...``: compose and plan like a run, start
vLLM's OpenAI server with the plan's deployment, wait for it, check it, register it."""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Sequence

from harness.config.schema import RunConfig
from harness.console import say
from harness.errors import ConfigError
from harness.planning.plan import Plan
from harness.service.attach import deployment_key, find_service
from harness.service.options import ServiceConfig, needs_key
from harness.service.registry import (
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
    server_command,
    server_environment,
    start_server,
    startup_budget_s,
    stop_server,
    wait_ready,
)

OFFLINE_ENV = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")


def composed(overrides: Sequence[str]) -> RunConfig:
    """The run the overrides compose (``conf/``, Hydra's compose API, the schema), checked as
    ``python -m harness`` checks its command line and its config.

    Raises:
        ConfigError: a word or a value the run would refuse too.
    """
    from hydra import compose, initialize_config_dir

    from harness.config.argv import (
        check_group_choices,
        output_problems,
        required_value_problems,
    )
    from harness.config.keys import argv_key_problems, composed_key_problems
    from harness.config.schema import to_run_config
    from harness.config.store import libyaml_loading, register_configs
    from harness.paths import CONF_DIR

    words = list(overrides)
    problems = check_group_choices(words) + argv_key_problems(words)
    problems += required_value_problems(words) + output_problems(words)
    if problems:
        raise ConfigError(problems)
    register_configs()
    try:
        with (
            libyaml_loading(),
            initialize_config_dir(str(CONF_DIR), version_base="1.3", job_name="harness"),
        ):
            cfg = compose("config", overrides=words)
        unknown = composed_key_problems(cfg)
        if unknown:
            raise ConfigError(unknown)
        return to_run_config(cfg)
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


def serving_plan(run: RunConfig) -> Plan:
    """The run's checked plan (``planning.preflight.checked_plan``, then what the engine and
    this node cannot do, as a run checks them before loading); it must plan vLLM.

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
    problems += engine_problems(plan)
    if plan.device == "cuda":
        problems += hardware_problems(plan.device, plan.gpus_needed, detect_gpus())
    if problems:
        raise ConfigError(problems)
    return plan


def free_port(host: str) -> int:
    """A port nobody listens on at ``host`` now."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def url_host(host: str) -> str:
    """Where runs reach a server listening on ``host``: loopback for loopback and the wildcard
    (``0.0.0.0`` listens there too), else the address itself."""
    if host in ("0.0.0.0", "::", "localhost") or host.startswith("127."):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def new_entry(plan: Plan, run: RunConfig, service: ServiceConfig) -> ServiceEntry:
    """The registry entry of a service about to start (no pid yet)."""
    service_id = f"{plan.model}-{secrets.token_hex(3)}"
    port = service.port or free_port(service.host)
    folder = services_dir(run.outputs_root)
    command = server_command(plan, service.host, port)
    env = server_environment(plan)
    if run.offline:
        env.update({name: "1" for name in OFFLINE_ENV})
    key = f"sk-harness-{secrets.token_urlsafe(24)}" if needs_key(service) else None
    return ServiceEntry(
        id=service_id,
        url=f"http://{url_host(service.host)}:{port}/v1",
        host=service.host,
        port=port,
        node=this_node(),
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
    )


def already_served(plan: Plan, run: RunConfig, service: ServiceConfig) -> ServiceEntry | None:
    """A live service of this user that serves this plan where ``service`` asks, if any."""
    target = find_service(plan, run.outputs_root)
    if target is None or target.service_id is None:
        return None
    entry = read_entry(entry_path(run.outputs_root, target.service_id))
    same_port = service.port is None or service.port == entry.port
    return entry if entry.host == service.host and same_port else None


def start(overrides: Sequence[str], service: ServiceConfig) -> int:
    """Compose, plan, start, wait, check and register one service; the exit code."""
    from harness import console
    from harness.views import format_plan_line

    run = composed(overrides)
    console.configure(run.verbose, draws_bars=False)
    plan = serving_plan(run)
    say(format_plan_line(plan))
    running = already_served(plan, run, service)
    if running is not None:
        say(f"service {running.id} serves this model and deployment at {running.url} already")
        return 0
    entry = new_entry(plan, run, service)
    path = entry_path(run.outputs_root, entry.id)
    start_server(entry)
    write_entry(path, entry)
    try:
        wait_ready(entry, say)
    except BaseException:  # not ready, or Ctrl-C: nothing left behind but its log
        stop_server(entry, grace_s=10.0)
        path.unlink(missing_ok=True)
        raise
    entry.status = Status.ready
    write_entry(path, entry)
    key = " (API key required: in the registry file, readable by you only)" if entry.api_key else ""
    say(
        f"service {entry.id} ready at {entry.url}{key}: model {entry.model_id}, pid "
        f"{entry.pid}, log {entry.log}. Runs whose model and deployment match attach to it; "
        f"stop it with: python -m harness.serve --stop {entry.id}"
    )
    return 0
