"""A run attaches to a live service whose model and deployment are the run's own.

The deployment a service was started with (``deployment_key``: the engine, the device, the model
folder or hub id and every server flag the plan derives: revision, dtype, tp/pp/dp, quantization,
max_model_len, seed, KV cache, ``strategy.engine_args``) is in its registry entry; a run plans its
own the same way, and attaches only where the two are equal, to a service of its own user whose
server is running and answers a one-token completion. Anything else loads the model as before;
where a service of the same model differs, the run says in what.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.console import say
from harness.service.registry import (
    ServiceEntry,
    Status,
    mark_dead,
    read_entry,
    read_registry,
    server_alive,
    this_node,
    write_entry,
)
from harness.service.server import (
    ServiceError,
    check_health,
    server_args,
    start_server,
    stop_server,
    wait_ready,
)

if TYPE_CHECKING:
    from harness.engines.base import Engine
    from harness.engines.remote.target import EndpointTarget
    from harness.planning.plan import Plan

ATTACH_HEALTH_TIMEOUT_S = 60.0
"""A live service that gives no one-token completion within this is not attached to."""
KEY_ENV = "HARNESS_SERVICE_API_KEY"
"""Where an attached service's key is put in the run's environment: its name marks it secret
(harness/secrets.py), so the key is masked in everything the run and its processes write."""


def deployment_key(plan: Plan) -> dict[str, Any]:
    """What must be equal for a run to attach: engine, device, model, the server's flags."""
    model, flags, _ = server_args(plan)
    return {"engine": plan.engine, "device": plan.device, "model": model, **flags}


def differences(have: dict[str, Any], want: dict[str, Any]) -> list[str]:
    """``key service-value != run-value`` for each key the two deployments disagree on."""
    keys = sorted(set(have) | set(want))
    return [f"{k} {have.get(k)!r} != {want.get(k)!r}" for k in keys if have.get(k) != want.get(k)]


def usable(path: Path, entry: ServiceEntry) -> str | None:
    """Why the matching service ``entry`` cannot be attached to, or None when it can; a server
    found gone or failing its health check is marked dead in the registry."""
    if entry.uid != os.getuid():
        return f"it belongs to user {entry.user}: a run attaches to its own user's services only"
    if entry.status != Status.ready:
        return f"it is {entry.status.value}" + (f" ({entry.reason})" if entry.reason else "")
    if entry.launcher == "slurm":  # SLURM's word, from any node; its URL is the node's address
        from harness.service.slurm_job import job_running

        ended = job_running(entry)
        if ended:
            mark_dead(path, entry, ended)
            return f"{ended}: marked dead"
    elif entry.node != this_node():
        return f"it runs on {entry.node}: a run attaches to a service of its own node"
    elif not server_alive(entry):
        mark_dead(path, entry, f"its server (pid {entry.pid} on {entry.node}) ended")
        return f"its server (pid {entry.pid}) is gone: marked dead"
    try:
        check_health(entry, timeout=ATTACH_HEALTH_TIMEOUT_S)
    except ServiceError as err:
        mark_dead(path, entry, str(err))
        return f"{err}: marked dead"
    return None


def find_service(plan: Plan, outputs_root: str | Path) -> EndpointTarget | None:
    """A live service of this user under ``outputs_root`` whose model and deployment are the
    plan's, as an endpoint target (its ``restart`` restarts the service once); None when there
    is none (the run then loads the model itself). What is passed over and why is said."""
    from harness.engines.remote.target import EndpointTarget

    if plan.engine != "vllm":  # a service is vLLM's server; an endpoint run is attached already
        return None
    registry = read_registry(outputs_root)
    for path, reason in registry.unreadable.items():
        say(f"service file {path.name} not considered: {reason}", show=False)
    if not registry.entries:
        return None
    want = deployment_key(plan)
    _, _, client = server_args(plan)
    for path, entry in registry.entries.items():
        if entry.deployment != want:
            if entry.deployment.get("model") == want["model"]:
                diff = "; ".join(differences(entry.deployment, want))
                say(f"service {entry.id} serves {entry.model} with another deployment ({diff})")
            continue
        if client:  # lm-eval's own keywords (reasoning settings) are no server flag
            say(f"service {entry.id} not attached to: the run sets {', '.join(client)}")
            continue
        why = usable(path, entry)
        if why:
            say(f"service {entry.id} not attached to: {why}")
            continue
        return EndpointTarget(
            base_url=entry.url,
            api=entry.api,
            model_id=entry.model_id,
            api_key=entry.api_key,
            # a SLURM job is not restarted by a run (its dataset fails with the reason)
            restart=None
            if entry.launcher == "slurm"
            else functools.partial(restart_service, path, entry.pid),
            service_id=entry.id,
        )
    return None


def restart_service(path: Path, known_pid: int) -> None:
    """Restart the service registered in ``path`` on the same port: what is left of its server
    is killed, the same command started again, waited for and checked (a run's recovery of a
    service that died or stalled mid-dataset; the engine calls it once). Runs attached to one
    service restart it one at a time: a run that finds it restarted by another since it knew it
    (pid ``known_pid``) and healthy leaves it be.

    Raises:
        ServiceError: the service was stopped (its entry is gone), or its server did not come
            back (it is then marked dead).
    """
    import fcntl

    lock = path.with_suffix(".lock")
    with open(lock, "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # released when the file closes
        try:
            entry = read_entry(path)
        except FileNotFoundError:
            raise ServiceError(
                f"service {path.stem} was stopped (its registry entry is gone): not restarted"
            ) from None
        if entry.pid != known_pid and entry.status == Status.ready and server_alive(entry):
            try:
                check_health(entry, timeout=ATTACH_HEALTH_TIMEOUT_S)
                say(f"service {entry.id} was restarted by another run (pid {entry.pid})")
                return
            except ServiceError:
                pass
        restart_locked(path, entry)


def restart_locked(path: Path, entry: ServiceEntry) -> None:
    """``restart_service``'s work, under its lock."""
    stop_server(entry, grace_s=10.0)
    start_server(entry)
    write_entry(path, entry)
    try:
        wait_ready(entry, say)
    except BaseException as err:
        mark_dead(path, entry, str(err) or type(err).__name__)
        stop_server(entry, grace_s=5.0)
        raise
    entry.status = Status.ready
    write_entry(path, entry)
    say(f"service {entry.id} restarted at {entry.url} (pid {entry.pid}, start {entry.starts})")


def attach_target(plan: Plan, outputs_root: str | Path) -> EndpointTarget | None:
    """``find_service``, then what attaching needs before it: the service's key registered for
    masking (``KEY_ENV``) and the libraries the endpoint engine uses imported (lm-eval's API
    models, transformers' tokenizers and torch under them: 2-4 s here, which every run pays
    once, in-process engines inside their load). Call it before the load starts."""
    target = find_service(plan, outputs_root)
    if target is None:
        return None
    if target.api_key:
        os.environ[KEY_ENV] = target.api_key
    # the fast tokenizer class the endpoint loads (engines/remote), not AutoTokenizer: that
    # imports transformers' model registry, which cost an attached run most of its start
    from transformers import PreTrainedTokenizerFast  # noqa: F401  torch under it

    import harness.engines.remote.engine  # noqa: F401  lm-eval's API models

    return target


def attached_engine(plan: Plan, target: EndpointTarget) -> Engine:
    """The endpoint engine on the service ``target`` (``attach_target``): the model's
    tokenizer, the server's facts, one health check; nothing loads."""
    from harness.engines.remote.engine import EndpointEngine

    say(f"attached to service {target.service_id} at {target.masked_url}")
    engine: Engine = EndpointEngine(plan, target)
    return engine
