"""``python -m harness.fetch``: what a run or a sweep needs from the hub, as ``hf download``
lines; what this machine's cache holds (snapshots written here in the layout ``hf download``
leaves); the exit codes. No hub exists here: the download itself is huggingface_hub's
``snapshot_download`` replaced by one that writes the snapshot, in the fetching tests only."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from harness.fetch.cli import main
from tests.evaluation.test_hub_data import REPO, hf_home, write_hub_snapshot, write_tasks

__all__ = ["hf_home"]  # the fixture, shared with the hub data tests

MODEL = "meta-llama/Llama-3.1-8B"
COMMIT = "fedcba9876543210fedcba9876543210fedcba98"
MODEL_LINE = f"hf download {MODEL}"
DATA_LINE = f"hf download {REPO} --repo-type dataset"


def write_model_snapshot(hub: Path, files: tuple[str, ...] = ("config.json", "tokenizer.json")):
    """A model's snapshot in HF_HOME/hub: ``files``, and the shards its index names that are
    among them."""
    snapshot = hub / f"models--{MODEL.replace('/', '--')}" / "snapshots" / COMMIT
    snapshot.mkdir(parents=True, exist_ok=True)
    shards = {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}
    for name in files:
        text = json.dumps({"weight_map": shards}) if name.endswith("index.json") else "{}"
        (snapshot / name).write_text(text)
    (snapshot.parent.parent / "refs").mkdir(exist_ok=True)
    (snapshot.parent.parent / "refs" / "main").write_text(COMMIT)
    return snapshot


WHOLE_MODEL = (
    "config.json",
    "tokenizer.json",
    "model.safetensors.index.json",
    "model-00001-of-00002.safetensors",
    "model-00002-of-00002.safetensors",
)


@pytest.fixture
def tasks(tmp_path):
    return write_tasks(tmp_path / "tasks", REPO)


@pytest.fixture
def offline(hf_home, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return hf_home


def run_words(tasks: Path, *more: str) -> list[str]:
    return ["model=llama3_1_8b", "dataset=[hubby,arith_mc]", f"task_paths=[{tasks}]", *more]


def test_print_gives_each_repo_of_a_sweep_once(tasks, hf_home, capsys):
    argv = ["--print", "-m", "model=llama3_1_8b,tiny_char", "dataset=[hubby],[arith_mc]"]
    assert main([*argv, f"task_paths=[{tasks}]"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1:] == [MODEL_LINE, DATA_LINE], lines  # arith_mc is bundled: nothing to fetch
    assert lines[0].startswith("# model folder ") and "plugins/models/tiny_char" in lines[0]


def test_offline_with_nothing_cached_says_what_is_missing_and_exits_2(tasks, offline, capsys):
    assert main(run_words(tasks)) == 2
    said = capsys.readouterr()
    assert f"missing  {MODEL_LINE}" in said.out and f"missing  {DATA_LINE}" in said.out
    assert "2 of 2 repo(s) missing" in said.err and "the hub is not reachable" in said.err
    assert f"{DATA_LINE}   # dataset {REPO} (config(s) easy, hard)" in said.err


def test_offline_with_everything_cached_exits_0(tasks, offline, capsys):
    write_hub_snapshot(offline / "hub")
    write_model_snapshot(offline / "hub", WHOLE_MODEL)
    assert main(run_words(tasks)) == 0
    out = capsys.readouterr().out
    assert f"here     {MODEL_LINE}" in out and f"here     {DATA_LINE}" in out


@pytest.mark.parametrize(
    "files",
    [
        ("config.json",),  # what planning fetches: a few kB, not a model
        WHOLE_MODEL[:-1],  # a shard the index names is missing
        tuple(f for f in WHOLE_MODEL if f != "tokenizer.json"),
    ],
    ids=["config-only", "shard-missing", "no-tokenizer"],
)
def test_a_model_snapshot_without_all_its_files_is_missing(tasks, offline, capsys, files):
    write_hub_snapshot(offline / "hub")
    write_model_snapshot(offline / "hub", files)
    assert main(run_words(tasks)) == 2
    assert f"missing  {MODEL_LINE}" in capsys.readouterr().out


def test_an_endpoint_run_needs_the_models_config_and_tokenizer_only(tasks, offline, capsys):
    write_hub_snapshot(offline / "hub")
    write_model_snapshot(offline / "hub")  # config and tokenizer, no weights
    endpoint = ["strategy=endpoint", "strategy.base_url=http://127.0.0.1:9/v1"]
    assert main(run_words(tasks, *endpoint)) == 0
    line = f"{MODEL_LINE} --include '*.json' --include 'tokenizer*'"
    assert f"here     {line}" in capsys.readouterr().out


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_no_network_counts_as_offline(tasks, hf_home, monkeypatch, capsys):
    from harness.fetch.cli import hub_reachable

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    assert not hub_reachable()
    assert main(run_words(tasks)) == 2
    assert "the hub is not reachable from here" in capsys.readouterr().err


def fake_hub(monkeypatch, hub: Path, fail: str | None = None) -> list[dict]:
    """The hub reachable, and huggingface_hub's snapshot_download writing what it would (the
    files ``allow_patterns`` matches), its hf_hub_download a dataset's README."""
    import fnmatch
    import shutil

    import huggingface_hub

    import harness.fetch.cli as cli

    calls: list[dict] = []

    def fresh_snapshot() -> Path:
        shutil.rmtree(hub / ("datasets--" + REPO.replace("/", "--")), ignore_errors=True)
        return write_hub_snapshot(hub)

    def snapshot_download(**kwargs):
        calls.append(kwargs)
        if kwargs["repo_id"] == fail:
            raise OSError("503 Service Unavailable")
        if kwargs["repo_type"] != "dataset":
            return str(write_model_snapshot(hub, WHOLE_MODEL))
        snapshot = fresh_snapshot()
        for path in [p for p in snapshot.rglob("*") if p.is_file()]:
            name = path.relative_to(snapshot).as_posix()
            allowed = kwargs["allow_patterns"]
            if allowed and not any(fnmatch.fnmatch(name, a) for a in allowed):
                path.unlink()
        return str(snapshot)

    def hf_hub_download(repo_id, filename, repo_type, revision=None):
        assert (repo_id, filename, repo_type) == (REPO, "README.md", "dataset")
        snapshot = fresh_snapshot()
        for path in snapshot.rglob("*.parquet"):
            path.unlink()
        return str(snapshot / filename)

    monkeypatch.setattr(cli, "hub_reachable", lambda: True)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hf_hub_download)
    return calls


CONFIG_FILES = ["README.md", "easy/test-*.parquet", "hard/test-*.parquet"]


def test_where_the_hub_is_reachable_the_missing_repos_are_fetched(
    tasks, hf_home, capsys, monkeypatch
):
    calls = fake_hub(monkeypatch, hf_home / "hub")
    assert main(run_words(tasks)) == 0
    assert calls == [
        {"repo_id": MODEL, "repo_type": "model", "revision": None, "allow_patterns": None},
        {"repo_id": REPO, "repo_type": "dataset", "revision": None, "allow_patterns": CONFIG_FILES},
    ]
    assert "fetched 2 repo(s)" in capsys.readouterr().out
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the compute node now finds everything
    assert main(run_words(tasks)) == 0


def test_a_failed_download_exits_1_and_the_others_go_on(tasks, hf_home, capsys, monkeypatch):
    calls = fake_hub(monkeypatch, hf_home / "hub", fail=MODEL)
    assert main(run_words(tasks)) == 1
    assert [c["repo_id"] for c in calls] == [MODEL, REPO]
    assert f"error: {MODEL_LINE} failed: 503 Service Unavailable" in capsys.readouterr().err


def test_check_never_downloads(tasks, hf_home, monkeypatch, capsys):
    calls = fake_hub(monkeypatch, hf_home / "hub")
    assert main(["--check", *run_words(tasks)]) == 2
    assert calls == [] and "(--check)" in capsys.readouterr().err


def test_bad_input_exits_2_naming_it(tasks, hf_home, capsys):
    assert main(["--fetch-all", "model=llama3_1_8b"]) == 2
    assert "unknown flag(s) --fetch-all" in capsys.readouterr().err
    assert main(["-m", "model=llama3_1_8b,no_such_model"]) == 2
    assert "no_such_model" in capsys.readouterr().err


def test_the_command_runs_as_a_module_with_its_help():
    done = subprocess.run(
        [sys.executable, "-m", "harness.fetch", "--help"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert "hf download" in done.stdout and "Exit codes" in done.stdout


def test_harness_help_points_to_the_fetch_command():
    done = subprocess.run(
        [sys.executable, "-m", "harness", "--help"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert "python -m harness.fetch --help" in done.stdout


SWEEP_IN_YAML = """defaults:
  - config
  - _self_
hydra:
  sweeper:
    params:
      model: llama3_1_8b,tiny_char
      dataset: "[hubby],[arith_mc]"
"""


def test_a_sweep_defined_in_the_config_lists_every_jobs_needs(tasks, hf_home, tmp_path, capsys):
    """``hydra.sweeper.params`` of the config a run starts from (``--config-dir``,
    ``--config-name``, as ``python -m harness`` takes them) is swept as Hydra's sweeper sweeps
    it: every job's needs are listed, not only those of the command line's sweep."""
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "both.yaml").write_text(SWEEP_IN_YAML)
    argv = ["--print", "-m", "--config-dir", str(conf), "--config-name=both"]
    assert main([*argv, f"task_paths=[{tasks}]"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1:] == [MODEL_LINE, DATA_LINE], lines
    assert lines[0].startswith("# model folder ") and "plugins/models/tiny_char" in lines[0]


def test_a_dataset_fetch_takes_only_the_configs_its_tasks_load(tasks, hf_home, monkeypatch):
    """The README's configs block says which files a config is: only those are fetched, and a
    snapshot lacking a config's files is missing for a run that needs it."""
    calls = fake_hub(monkeypatch, hf_home / "hub")
    easy = ["model=tiny_char", "dataset=[hubby_easy]", f"task_paths=[{tasks}]"]
    assert main(easy) == 0
    assert [c["allow_patterns"] for c in calls] == [["README.md", "easy/test-*.parquet"]]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["--check", *easy]) == 0
    both = ["model=tiny_char", "dataset=[hubby]", f"task_paths=[{tasks}]"]
    assert main(["--check", *both]) == 2  # hubby_hard's files were not fetched
