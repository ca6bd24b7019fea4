"""Shared fixtures: a composed config without Hydra's app, and a subprocess runner for the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from harness.config.schema import register_configs
from harness.paths import CONF_DIR, PROJECT_ROOT

register_configs()


@pytest.fixture
def compose_cfg() -> Callable[..., DictConfig]:
    """Compose the run config from conf/ with overrides, as the CLI would."""

    def _compose(*overrides: str) -> DictConfig:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose(config_name="config", overrides=list(overrides))

    return _compose


def offline_env(tmp_path: Path) -> dict[str, str]:
    """The environment of a fresh machine: no hub cache, no network."""
    env = dict(os.environ)
    env.update(
        HF_HOME=str(tmp_path / "hf_home"),
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
    )
    env.pop("HYDRA_FULL_ERROR", None)
    return env


def run_harness(
    args: list[str], tmp_path: Path, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m harness`` in a subprocess from a neutral cwd."""
    return subprocess.run(
        [sys.executable, "-m", "harness", *args],
        cwd=tmp_path,
        env=offline_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


BUNDLED_TASKS = ["arith_mc", "compare_mc", "reverse_gen", "successor_gen", "story_ppl"]
TINY_MODEL = PROJECT_ROOT / "plugins" / "models" / "tiny_char"
