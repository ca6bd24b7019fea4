"""``config.yaml`` is written by libyaml's emitter, and must be the very text OmegaConf writes."""

from __future__ import annotations

import yaml
from omegaconf import OmegaConf

from harness.record.config_yaml import config_yaml

TRICKY = {
    "plain": "falcon_40b",
    "reads_as": ["yes", "No", "on", "OFF", "y", "1", "1e3", "-0.5", "nan", "inf", "0x10", "1_000"],
    "types": {"int": 3, "float": 0.25, "bool": True, "none": None, "empty": "", "space": " 1 "},
    "text": "line one\nline two: with colon",
    "unicode": "modèle 模型",
    "nested": {"list": [{"a": "b"}, [1, "2"]], "empty_list": [], "empty_dict": {}},
    "uri": "sqlite:///outputs/mlflow.db",
    "interpolation_like": "${not.resolved}",
}


def test_config_yaml_is_omegaconfs_text_and_reads_back() -> None:
    assert config_yaml(TRICKY) == OmegaConf.to_yaml(TRICKY)
    assert OmegaConf.to_container(OmegaConf.create(config_yaml(TRICKY))) == TRICKY
    assert yaml.safe_load(config_yaml(TRICKY)) == TRICKY


def test_a_composed_config_is_written_as_omegaconf_writes_it(compose_cfg) -> None:
    datasets = "dataset=[arith_mc,story_ppl]"
    cfg = compose_cfg("model=falcon_40b", "strategy=tp4", "tier=medium", datasets)
    tree = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    assert config_yaml(tree) == OmegaConf.to_yaml(tree)
