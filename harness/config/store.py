"""Hydra's side of the config: the schemas in its ConfigStore and the resolvers the YAML uses.

Kept apart from ``harness.config.schema`` (types only). Importing this module registers the
resolvers, since jobs that Hydra launches elsewhere (submitit) resolve the config without calling
``main()``: they unpickle ``harness.app``, which imports this module.
"""

from __future__ import annotations

from typing import Any

from harness.config.schema import RunConfig, name_of


def register_resolvers() -> None:
    """Resolvers the config files use: ``${model_name:<pretrained>}`` names a run after its
    checkpoint (``model=hf``); ``${machine:<field>}`` is one figure of this node (``tier=local``).
    """
    from omegaconf import OmegaConf

    def model_name(pretrained: str) -> str:
        return name_of(str(pretrained))

    def machine(key: str) -> Any:
        from harness.machine.node import tier_value

        return tier_value(key)

    OmegaConf.register_new_resolver("model_name", model_name, replace=True)
    OmegaConf.register_new_resolver("machine", machine, replace=True)


def register_configs() -> None:
    """Store the schemas so every YAML in a group is checked against its dataclass."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(name="base_config", node=RunConfig)
    register_resolvers()


register_resolvers()
