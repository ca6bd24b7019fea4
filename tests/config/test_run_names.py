"""A run is named after the checkpoint it loads (``${model_name:...}``): two training runs'
checkpoints of one step never share a name, however the path was typed (issue 20)."""

from __future__ import annotations

import pytest

from harness.config.schema import name_of


@pytest.mark.parametrize(
    "typed,name",
    [
        ("Qwen/Qwen3-8B", "qwen3_8b"),
        ("/ckpt/runA/checkpoint-500", "runa_checkpoint_500"),
        ("runB/global_step1000/", "runb_global_step1000"),
        ("./checkpoint-500", "runa_checkpoint_500"),  # typed inside runA/: its folder names it
        (".", "runa"),
        ("../checkpoint-500", "runa_checkpoint_500"),  # typed inside runA/checkpoint-500/
    ],
)
def test_a_path_is_named_by_the_folders_it_means(tmp_path, monkeypatch, typed, name):
    (tmp_path / "runA" / "checkpoint-500").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "runA" / ("checkpoint-500" if typed.startswith("..") else ""))
    assert name_of(typed) == name
