"""Hydra's side of the config: the schemas in its ConfigStore and the resolvers the YAML uses.

Kept apart from ``harness.config.schema`` (types only). Importing this module registers the
resolvers, since jobs that Hydra launches elsewhere (submitit) resolve the config without calling
``main()``: they unpickle ``harness.app``, which imports this module.
"""

from __future__ import annotations

import contextlib
import functools
import secrets
from collections.abc import Iterator
from typing import Any, TypeVar

from harness.config.schema import RunConfig, name_of

T = TypeVar("T")


@functools.cache
def run_suffix() -> str:
    """Six hex digits, drawn once per process: the end of a run directory's name, so that two
    runs started in the same second (a shell loop with ``&``, two users, ``srun`` steps on
    several nodes) never share a directory (1 in 16.7 million for two runs of one second)."""
    return secrets.token_hex(3)


def register_resolvers() -> None:
    """Resolvers the config files use: ``${model_name:<pretrained>}`` names a run after its
    checkpoint (``model=hf``); ``${machine:<field>}`` is one figure of this node (``tier=local``);
    ``${run_suffix:}`` ends a run directory's name (``run_suffix``).
    """
    from omegaconf import OmegaConf

    def model_name(pretrained: str) -> str:
        return name_of(str(pretrained))

    def machine(key: str) -> Any:
        from harness.machine.node import tier_value

        return tier_value(key)

    OmegaConf.register_new_resolver("model_name", model_name, replace=True)
    OmegaConf.register_new_resolver("machine", machine, replace=True)
    OmegaConf.register_new_resolver("run_suffix", run_suffix, replace=True)


def register_configs() -> None:
    """Store the schemas so every YAML in a group is checked against its dataclass."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(name="base_config", node=RunConfig)
    register_resolvers()


def load_option(group: str, name: str, schema: type[T]) -> T:
    """``conf/<group>/<name>.yaml`` typed by its schema, without composing a run (a YAML key the
    schema lacks, or a value of the wrong type, raises as Hydra would)."""
    from omegaconf import OmegaConf

    from harness.paths import CONF_DIR

    node = OmegaConf.merge(
        OmegaConf.structured(schema), OmegaConf.load(CONF_DIR / group / f"{name}.yaml")
    )
    typed = OmegaConf.to_object(node)
    assert isinstance(typed, schema)
    return typed


OUTSIDE_CONF = (
    *("hydra.searchpath=", "+hydra.searchpath=", "++hydra.searchpath="),
    *("--config-dir", "-cd", "--config-path", "-cp", "--config-name", "-cn"),
)
"""Command-line words that bring in config files other than harness's own ``conf/``."""


def mode_from_argv(argv: list[str]) -> Any:
    """Hydra's run mode as the command line decides it, or ``...`` where only Hydra can say.

    Hydra composes the whole config once only to read ``hydra.mode`` (``Hydra.get_mode``: about
    half of a plan-only call) and then again to run. No file of harness's own ``conf/`` sets
    ``hydra.mode`` (tests/config/test_configs.py holds that), so with nothing but ``conf/`` the mode
    is the command line's: ``hydra.mode=...`` if given, else None (Hydra then runs a single run,
    or a sweep with ``-m``, and says so in ``hydra.mode``). A command that brings in other config
    files (a search path, another config dir or name) may set it there: ``...``, ask Hydra.
    """
    from hydra.types import RunMode

    if any(word.startswith(OUTSIDE_CONF) for word in argv):
        return ...
    for word in argv:
        if word.startswith(("hydra.mode=", "++hydra.mode=")):
            value = word.split("=", 1)[1]
            return RunMode[value] if value in RunMode.__members__ else ...
    return None


def compose_once(argv: list[str]) -> None:
    """Make Hydra compose the config once per command, not twice, where ``mode_from_argv`` can
    tell the mode without composing (a private Hydra method is replaced for this process)."""
    from hydra._internal.hydra import Hydra

    mode = mode_from_argv(argv)
    if mode is ...:
        return
    hydras_own = Hydra.get_mode

    def get_mode(self: Any, config_name: Any, overrides: list[str]) -> Any:
        # Only the call for this command's own overrides is answered without composing.
        if list(overrides) == [w for w in argv if not w.startswith("-")]:
            return mode
        return hydras_own(self, config_name, overrides)

    Hydra.get_mode = get_mode  # type: ignore[method-assign]


@functools.cache
def _libyaml_loader() -> Any:
    """OmegaConf's YAML loader (``omegaconf._utils.get_yaml_loader``: duplicate keys refused,
    YAML 1.2 floats, no timestamps) on libyaml's parser instead of PyYAML's pure-Python one."""
    import yaml
    from omegaconf._utils import get_yaml_loader

    class LibyamlOmegaConfLoader(yaml.CSafeLoader):
        # OmegaConf's own check, repeated: its method calls super() of its own class.
        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            keys = set()
            for key_node, _ in node.value:
                if key_node.tag != yaml.resolver.BaseResolver.DEFAULT_SCALAR_TAG:
                    continue
                if key_node.value in keys:
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping",
                        node.start_mark,
                        f"found duplicate key {key_node.value}",
                        key_node.start_mark,
                    )
                keys.add(key_node.value)
            return super().construct_mapping(node, deep=deep)

    # OmegaConf's implicit resolvers (its float rule, no timestamps), not PyYAML's.
    LibyamlOmegaConfLoader.yaml_implicit_resolvers = get_yaml_loader().yaml_implicit_resolvers
    return LibyamlOmegaConfLoader


@contextlib.contextmanager
def libyaml_loading() -> Iterator[None]:
    """Within: ``OmegaConf.load`` (every config file Hydra composes) parses with libyaml, ten
    times faster than PyYAML's pure-Python parser (35 ms against 3.3 ms for conf/'s and Hydra's 61
    files on the developers' machine): a fifth of plan-only's compose. The same loader rules,
    the same values (tests/config/test_libyaml_loading.py holds it for every file). Where PyYAML
    was built without libyaml, nothing changes."""
    import yaml
    from omegaconf import _utils

    if not getattr(yaml, "__with_libyaml__", False):
        yield
        return
    loader = _libyaml_loader()
    pythons = _utils.get_yaml_loader
    _utils.get_yaml_loader = lambda: loader
    try:
        yield
    finally:
        _utils.get_yaml_loader = pythons


register_resolvers()
