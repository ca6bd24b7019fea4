"""Every option of every config group composes into a typed, valid run config."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from harness.config.schema import RunConfig, to_run_config
from harness.paths import CONF_DIR

GROUPS = ["model", "strategy", "tier", "dataset", "tracking"]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


@pytest.mark.parametrize(
    "group,option", [(g, o) for g in GROUPS for o in options(g)], ids=lambda v: str(v)
)
def test_every_option_composes(compose_cfg, group, option):
    override = f"{group}=[{option}]" if group == "dataset" else f"{group}={option}"
    # The generic model option names no checkpoint of its own: give it the bundled one.
    extra = ["model.pretrained=plugins/models/tiny_char"] if override == "model=hf" else []
    cfg = compose_cfg(override, *extra)
    run = to_run_config(cfg)
    assert isinstance(run, RunConfig)
    if group == "dataset":
        assert list(run.dataset) == [option]
        assert run.dataset[option].task
    else:
        assert OmegaConf.select(cfg, f"{group}") is not None
        if override == "model=hf":
            assert run.model.name == "tiny_char"  # named after its checkpoint
        elif group != "tracking":
            assert getattr(run, group).name == option


def test_every_group_has_options():
    for group in GROUPS:
        assert options(group), f"conf/{group}/ has no options"


def test_default_is_the_bundled_suite(compose_cfg):
    run = to_run_config(compose_cfg())
    assert run.model.name == "tiny_char"
    assert list(run.dataset) == [
        "arith_mc",
        "compare_mc",
        "reverse_gen",
        "successor_gen",
        "story_ppl",
    ]
    assert run.tracking.uri == "sqlite:///outputs/mlflow.db"
    assert run.offline is True


def test_dataset_list_keeps_each_datasets_settings(compose_cfg):
    cfg = compose_cfg(
        "dataset=[arith_mc,reverse_gen]",
        "dataset.arith_mc.num_fewshot=3",
        "dataset.reverse_gen.limit=10",
    )
    run = to_run_config(cfg)
    assert run.dataset["arith_mc"].num_fewshot == 3
    assert run.dataset["arith_mc"].limit is None
    assert run.dataset["reverse_gen"].limit == 10
    assert run.dataset["reverse_gen"].num_fewshot is None


@pytest.mark.parametrize(
    "override,needle",
    [
        ("model.num_layer=3", "num_layer"),
        ("dataset.arith_mc.limt=3", "limt"),
        ("strategy.tensor_parallel=2", "tensor_parallel"),
        ("strategy.engine=torch", "strategy.engine"),
        ("dataset.arith_mc.num_fewshot=two", "dataset.arith_mc.num_fewshot"),
    ],
)
def test_typo_fails_at_compose_naming_the_key(compose_cfg, override, needle):
    with pytest.raises(Exception) as info:
        compose_cfg(override)
    assert needle in str(info.value)


def test_every_config_file_says_how_to_use_it():
    for path in CONF_DIR.rglob("*.yaml"):
        text = path.read_text()
        assert "python -m harness" in text, f"{path} lacks a usage comment"


def test_no_config_file_sets_hydras_mode():
    """``mode_from_argv`` answers Hydra's run mode from the command line without composing; that
    is right only while no file of conf/ sets ``hydra.mode``."""
    import yaml

    for path in CONF_DIR.rglob("*.yaml"):
        data = yaml.safe_load(path.read_text()) or {}
        hydra_node = data.get("hydra") if isinstance(data, dict) else None
        assert not (isinstance(hydra_node, dict) and "mode" in hydra_node), path


@pytest.mark.parametrize(
    ("argv", "mode"),
    [
        (["model=falcon_40b", "plan_only=true"], None),
        (["-m", "dataset.arith_mc.limit=10,20"], None),
        (["hydra.mode=MULTIRUN", "x=1"], "MULTIRUN"),
        (["hydra.mode=RUN"], "RUN"),
        (["hydra.mode=BOGUS"], ...),  # Hydra's own compose says what is wrong
        (["hydra.searchpath=[file://tests/fixtures/conf]", "model=tiny"], ...),
        (["--config-dir", "/elsewhere"], ...),
        (["-cn", "other"], ...),
    ],
)
def test_the_run_mode_comes_from_the_command_line_or_from_hydra(argv, mode):
    from hydra.types import RunMode

    from harness.config.store import mode_from_argv

    expected = RunMode[mode] if isinstance(mode, str) else mode
    assert mode_from_argv(argv) == expected
