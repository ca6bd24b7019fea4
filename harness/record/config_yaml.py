"""The text of ``config.yaml``: the config as typed, as OmegaConf writes it, through libyaml."""

from __future__ import annotations

from typing import Any

_READS_AS_BOOL = {
    *("y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO", "true", "True", "TRUE"),
    *("false", "False", "FALSE", "on", "On", "ON", "off", "Off", "OFF"),
}
"""Strings that YAML 1.1 (and so OmegaConf) reads back as a bool unless quoted."""


def config_yaml(config: dict[str, Any]) -> str:
    """``config`` as YAML, the very text ``OmegaConf.to_yaml`` writes, through libyaml's emitter
    where it is built (about 10x faster: a plan-only call writes one, tests/record holds them
    equal). As OmegaConf does, a string that would read back as a bool or a number is quoted."""
    import yaml

    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)

    class ConfigDumper(dumper):  # type: ignore[misc, valid-type]
        pass

    def string(dumper: Any, data: str) -> Any:
        quoted = data in _READS_AS_BOOL or _reads_as_number(data)
        tag = "tag:yaml.org,2002:str"
        return dumper.represent_scalar(tag, data, style="'" if quoted else None)

    ConfigDumper.add_representer(str, string)
    text = yaml.dump(
        config, Dumper=ConfigDumper, default_flow_style=False, allow_unicode=True, sort_keys=False
    )
    return str(text)


def _reads_as_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
