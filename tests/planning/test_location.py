"""Paths are relative to where the user stands (issue 20): ``model.pretrained`` is resolved once,
while planning, against the current directory, and the plan records the absolute folder; the
bundled model keeps meaning the project's folder, under the name its stored results were keyed by.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.config.schema import ModelConfig
from harness.errors import ConfigError
from harness.paths import PROJECT_ROOT
from harness.planning.location import bundled_pretrained, locate_pretrained
from harness.planning.model_facts import resolve_model
from tests.conftest import FIXTURES, TINY_MODEL, assert_clean_failure, fake_hub_cache, offline_env
from tests.planning.test_model_facts import registry_model
from tests.planning.test_plan import probe

BUNDLED = "plugins/models/tiny_char"


def generic(pretrained: str) -> ModelConfig:
    """``model=hf model.pretrained=<pretrained>`` as composed: no figure of its own."""
    return ModelConfig(name="any", pretrained=pretrained)


@pytest.fixture
def here(tmp_path, monkeypatch) -> Path:
    """A directory of the user's, holding a checkpoint at ckpt/my_llama, made the current one."""
    shutil.copytree(TINY_MODEL, tmp_path / "ckpt" / "my_llama")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("typed", ["./ckpt/my_llama", "ckpt/my_llama", "ckpt/my_llama/"])
def test_a_relative_checkpoint_is_the_folder_under_the_current_directory(here, typed):
    model, notes = resolve_model(generic(typed), offline=True)
    assert model.pretrained == str(here / "ckpt" / "my_llama")  # what the plan records
    assert model.num_layers == 4 and model.vocab_size == 100  # read from that folder
    assert str(here / "ckpt" / "my_llama") in notes[0]


def test_a_folder_here_wins_over_a_cached_hub_id_of_the_same_name(here, monkeypatch):
    config = json.loads((FIXTURES / "hf_configs" / "qwen3_30b_a3b.json").read_text())
    fake_hub_cache(here / "hub", "acme/Moe-30B", config, 30_532_122_624)
    monkeypatch.setenv("HF_HUB_CACHE", str(here / "hub"))
    hub, _ = resolve_model(generic("acme/Moe-30B"), offline=True)
    assert hub.pretrained == "acme/Moe-30B" and hub.num_layers == 48  # no folder here: the hub
    shutil.copytree(TINY_MODEL, here / "acme" / "Moe-30B")
    local, notes = resolve_model(generic("acme/Moe-30B"), offline=True)
    assert local.pretrained == str(here / "acme" / "Moe-30B") and local.num_layers == 4
    assert "a local folder wins over a hub id" in notes[0]


def test_a_relative_path_missing_here_is_refused_even_where_the_project_has_it(
    tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as err:
        resolve_model(generic(f"./{BUNDLED}"), offline=True)
    (problem,) = err.value.problems
    assert f"{tmp_path / BUNDLED} does not exist" in problem
    assert "a relative path starts at the current directory" in problem


def test_the_bundled_model_means_the_project_folder_from_any_directory(tmp_path, monkeypatch):
    assert BUNDLED in bundled_pretrained()  # and any other model bundled under plugins/models/
    assert all((PROJECT_ROOT / p).is_dir() for p in bundled_pretrained())
    tiny = registry_model("tiny_char")
    decoy = tmp_path / BUNDLED  # a folder of that path here does not replace the bundled model
    shutil.copytree(TINY_MODEL, decoy)
    (decoy / "config.json").write_text("{}")
    for where in (tmp_path, PROJECT_ROOT):
        monkeypatch.chdir(where)
        model, notes = resolve_model(tiny, offline=True)
        assert (model, notes) == (tiny, [])  # kept as written: the fingerprint holds it
    # The bundled folder by another spelling is the bundled model, not a checkpoint of its own.
    for typed in (f"./{BUNDLED}", str(TINY_MODEL)):
        located = locate_pretrained(typed, cwd=PROJECT_ROOT)
        assert (located.pretrained, located.note) == (BUNDLED, None)
    spelt = registry_model("tiny_char")
    spelt.pretrained = f"./{BUNDLED}"
    assert resolve_model(spelt, offline=True) == (tiny, [])


def test_a_hydra_job_that_moved_into_its_run_directory_resolves_where_it_started(here, monkeypatch):
    """``hydra.job.chdir=true`` moves a job into its run directory; the user still stood here."""
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig

    from harness.paths import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        job = compose(config_name="config", return_hydra_config=True)  # hydra.runtime.cwd: here
    (here / "run").mkdir()
    monkeypatch.chdir(here / "run")
    HydraConfig.instance().set_config(job)
    try:
        located = locate_pretrained("ckpt/my_llama")
    finally:
        HydraConfig.instance().cfg = None  # no job left behind for the other tests
    assert located.pretrained == str(here / "ckpt" / "my_llama")


def test_a_hub_id_with_no_folder_here_stays_a_hub_id(tmp_path):
    located = locate_pretrained("meta-llama/Llama-3.1-8B", cwd=tmp_path)
    assert (located.pretrained, located.note) == ("meta-llama/Llama-3.1-8B", None)


def test_plan_json_records_the_absolute_folder_and_the_default_keeps_its_path(tmp_path):
    shutil.copytree(TINY_MODEL, tmp_path / "ckpt" / "my_llama")
    code, heavy, out = probe(tmp_path, "model=hf", "model.pretrained=ckpt/my_llama",
                             "plan_only=true")  # fmt: skip
    assert code == 0 and heavy == [], out
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert plan["model"] == "my_llama"
    assert plan["model_facts"]["pretrained"] == str(tmp_path / "ckpt" / "my_llama")
    assert any("a local folder wins over a hub id" in n for n in plan["notes"])
    code, _, out = probe(tmp_path, "plan_only=true")  # the embedded default, from elsewhere
    assert code == 0, out
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert plan["model_facts"]["pretrained"] == BUNDLED  # the store's key of the default run


def test_a_relative_checkpoint_missing_here_is_a_clean_refusal(tmp_path):
    from tests.conftest import run_harness

    proc = run_harness(["model=hf", f"model.pretrained=./{BUNDLED}", "plan_only=true"], tmp_path)
    assert_clean_failure(proc, str(tmp_path / BUNDLED), "current directory", "Fix:")


@pytest.mark.slow
def test_a_sweeps_jobs_load_what_its_launcher_planned(tmp_path):
    """The local launcher plans every job, then each job plans again where it runs: both
    resolve ``ckpt/...`` against the directory the sweep was started in."""
    for run in ("runA", "runB"):
        shutil.copytree(TINY_MODEL, tmp_path / run / "checkpoint-500")
    sweep = tmp_path / "sweep"
    proc = subprocess.run(
        [sys.executable, "-m", "harness", "-m", "model=hf",
         "model.pretrained=runA/checkpoint-500,./runB/checkpoint-500", "dataset=[arith_mc]",
         "dataset.arith_mc.limit=4", "tracking=none", "hydra/launcher=submitit_local",
         f"outputs_root={tmp_path / 'out'}", f"hydra.sweep.dir={sweep}"],
        cwd=tmp_path, env=offline_env(tmp_path), capture_output=True, text=True, timeout=300,
        check=False,
    )  # fmt: skip
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    summaries = sorted(sweep.glob("*/summary.json"))
    assert len(summaries) == 2, sorted(p.name for p in sweep.iterdir())
    for path, run in zip(summaries, ("runA", "runB"), strict=True):
        summary = json.loads(path.read_text())
        folder = str(tmp_path / run / "checkpoint-500")
        assert summary["plan"]["model_facts"]["pretrained"] == folder
        assert summary["model"] == f"{run.lower()}_checkpoint_500"
        assert summary["engine"]["pretrained"] == folder  # what was loaded
