"""The serve command's own words: ``--list``, ``--stop ID|all``, ``--help`` and the ``service.*``
settings; every other word is a run's override, composed by Hydra as ``python -m harness`` does."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from harness.errors import ConfigError


class Action(StrEnum):
    """What the serve command does."""

    start = "start"
    list = "list"
    stop = "stop"
    help = "help"


@dataclass
class ServiceConfig:
    """``service.*``: where the server listens and how long it may take to start."""

    host: str = "127.0.0.1"
    """Address the server listens on; another than loopback (``0.0.0.0``) requires an API key,
    which harness generates and keeps in the registry file (mode 0600)."""
    port: int | None = None
    """Its port; null: a free one. A restart keeps it."""
    api_key: bool | None = None
    """Require an API key; null: off loopback only. true: on loopback too (a shared node)."""
    startup_timeout_s: float | None = None
    """Longest wait for the server to be ready; null: 300 s plus 10 s per GB of weights
    (20 s on the CPU)."""


@dataclass
class ServeArgs:
    """The command line, taken apart."""

    action: Action = Action.start
    """``--list``, ``--stop``, ``--help``, else start."""
    stop: str = ""
    """The service ``--stop`` names (an id, or ``all``)."""
    service: ServiceConfig = field(default_factory=ServiceConfig)
    """The ``service.*`` settings."""
    overrides: list[str] = field(default_factory=list)
    """The run's overrides (``model=...``, ``strategy=...``, ``outputs_root=...``)."""


def parse(argv: Sequence[str]) -> ServeArgs:
    """``argv`` taken apart; every bad word is refused at once (value, rule, fix).

    Raises:
        ConfigError: an unknown flag, ``--stop`` without an id, a bad ``service.*`` setting.
    """
    args, problems, words = ServeArgs(), [], list(argv)
    settings = []
    while words:
        word = words.pop(0)
        if word in ("--help", "-h"):
            args.action = Action.help
        elif word == "--list":
            args.action = Action.list
        elif word == "--stop" or word.startswith("--stop="):
            value = word.split("=", 1)[1] if "=" in word else (words.pop(0) if words else "")
            args.action, args.stop = Action.stop, value
            if not value or value.startswith("-"):
                problems.append("--stop needs a service id (or all). Fix: --stop <id> (--list)")
        elif word.startswith("-"):
            problems.append(
                f"{word}: not a flag of harness.serve. Fix: --list, --stop ID|all, --help, or "
                "key=value overrides"
            )
        elif word.lstrip("+").startswith("service."):
            settings.append(word.lstrip("+").removeprefix("service."))
        else:
            args.overrides.append(word)
    service, wrong = service_config(settings)
    args.service = service
    problems += wrong
    if problems:
        raise ConfigError(problems)
    return args


def service_config(settings: list[str]) -> tuple[ServiceConfig, list[str]]:
    """``service.*`` settings typed by ``ServiceConfig`` (OmegaConf checks keys and types)."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    problems = []
    node = OmegaConf.structured(ServiceConfig)
    for setting in settings:
        try:
            node = OmegaConf.merge(node, OmegaConf.from_dotlist([setting]))
        except OmegaConfBaseException as err:
            first = str(err).splitlines()[0]
            problems.append(
                f"service.{setting}: {first}. Fix: service.host=<address>, service.port=<int>, "
                "service.api_key=true|false, service.startup_timeout_s=<seconds>"
            )
    typed = OmegaConf.to_object(node)
    assert isinstance(typed, ServiceConfig)
    if typed.port is not None and not 0 < typed.port < 65536:
        problems.append(f"service.port={typed.port}: not a port. Fix: 1-65535, or leave it out")
    if typed.startup_timeout_s is not None and typed.startup_timeout_s <= 0:
        problems.append(f"service.startup_timeout_s={typed.startup_timeout_s}: must be positive")
    if typed.api_key is False and not loopback(typed.host):
        problems.append(
            f"service.api_key=false with service.host={typed.host}: a server reachable from other "
            "nodes requires an API key. Fix: leave service.api_key out (harness generates one), "
            "or service.host=127.0.0.1"
        )
    return typed, problems


def loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this node only (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def needs_key(service: ServiceConfig) -> bool:
    """An API key is required off loopback, and on loopback where ``service.api_key`` says."""
    if service.api_key is None:
        return not loopback(service.host)
    return service.api_key or not loopback(service.host)  # false off loopback: parse refuses
