"""Shared fixtures: a composed config without Hydra's app, and a subprocess runner for the CLI."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

# One compute thread per process, here and in every process a test starts (torch reads it at
# import; offline_env copies the environment): pytest runs two workers on two cores, and a
# process computing with two OpenMP threads beside other work waits at every parallel region for
# its descheduled thread. Measured: 4,000 generations of the bundled model take 6.3 s alone and
# 63 s beside two busy loops with 2 threads, 7.7 s and 11.7 s with 1. vLLM's CPU ranks bind their
# own threads whatever this says (harness's engines/vllm_support/cpu.py for tp > 1, vLLM's auto
# binding for one rank).
os.environ.setdefault("OMP_NUM_THREADS", "1")

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from harness.config.store import register_configs
from harness.paths import CONF_DIR, PROJECT_ROOT

register_configs()


# The test commands (README, docs/testing.md) run two pytest-xdist workers, each test file on
# one worker (--dist loadfile: a module's fixtures are built once, and tests that read what an
# earlier one left, as replay's do, see it). Its workers ignore SIGINT (its controller takes
# Ctrl-C), and an ignored SIGINT is inherited by every process they start: a test that presses
# Ctrl-C on a run would press it on a run that cannot hear it. The workers take Python's own
# handler back.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


NOT_FAST = ("slow", "gpu", "vllm", "ray", "slurm", "browser")
"""Markers of what the fast tier leaves out: end-to-end runs and the real parts."""


@pytest.hookimpl(tryfirst=True)  # before ``-m`` selects: the mark must be there to be seen
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark ``fast`` every test that has none of ``NOT_FAST``: the fast tier is then one name,
    ``python -m pytest -m fast`` (docs/testing.md), and a new test joins it unless marked."""
    for item in items:
        if not any(item.get_closest_marker(name) for name in NOT_FAST):
            item.add_marker(pytest.mark.fast)


def pytest_runtest_setup(item: pytest.Item) -> None:
    """A test marked with a real part it needs skips, or fails where that part is required,
    when the part is missing (tests/real_parts.py holds the one rule)."""
    from tests.real_parts import PARTS, need

    for part in PARTS:
        if item.get_closest_marker(part) is not None:
            need(part)


@pytest.fixture
def compose_cfg() -> Callable[..., DictConfig]:
    """Compose the run config from conf/ with overrides, as the CLI would."""

    def _compose(*overrides: str) -> DictConfig:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose(config_name="config", overrides=list(overrides))

    return _compose


def json_lines(path: Path) -> list[dict]:
    """A JSON-lines file's lines that parse (events.jsonl, a request journal), read without
    harness's own readers; a line being written as this reads it, or torn, is left out, and a
    file not there yet reads as empty."""
    import json

    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return []
    found = []
    for line in raw.splitlines():
        try:
            found.append(json.loads(line))
        except ValueError:
            continue
    return found


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
    for name in [n for n in env if n.startswith("PYTEST_")]:  # MLflow checks sessions under it
        del env[name]
    return env


def run_offline(
    command: list[str], cwd: Path, home: Path | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """Run ``command`` to its end from ``cwd`` in the offline environment of ``home`` (its
    hf_home; ``cwd`` unless given), its output captured as text; the exit code is the caller's."""
    return subprocess.run(
        command,
        cwd=cwd,
        env=offline_env(home or cwd),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def run_module(
    module: str, *args: str, cwd: Path, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m <module> <args>`` in a subprocess from ``cwd`` (a neutral folder, whose
    own hf_home the offline environment points at), as a user would on a fresh machine."""
    return run_offline([sys.executable, "-m", module, *args], cwd, timeout=timeout)


def run_harness(
    args: list[str], tmp_path: Path, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m harness`` in a subprocess from a neutral cwd."""
    return run_module("harness", *args, cwd=tmp_path, timeout=timeout)


LM_EVAL_CLI = """
import sys
from functools import partialmethod
from lm_eval.tasks import TaskManager
TaskManager.__init__ = partialmethod(TaskManager.__init__, include_defaults=False)
from lm_eval.__main__ import cli_evaluate
sys.argv = ["lm_eval", *sys.argv[1:]]
cli_evaluate()
"""
"""lm-eval's own CLI entry, its task index limited to ``--include_path`` as harness's own
(``evaluation/tasks.build_task_manager``) is: the built-in index parses about 14,000 YAML files
(10 s a call, 20 s beside another worker) and holds none of the bundled tasks the tests use."""


def run_lm_eval_cli(
    args: list[str], tmp_path: Path, timeout: float = 900
) -> subprocess.CompletedProcess[str]:
    """Run ``lm_eval <args>`` (its CLI, flags as a user types them) from the project folder."""
    command = [sys.executable, "-c", LM_EVAL_CLI, *args]
    return run_offline(command, PROJECT_ROOT, home=tmp_path, timeout=timeout)


TESTS_DIR = Path(__file__).parent
FIXTURES = TESTS_DIR / "fixtures"
"""Task folders, configs and checkpoints the tests read."""
FAKE_NVML = TESTS_DIR / "fake_nvml"
"""The small fake NVML module (``pynvml``) put on PYTHONPATH where a test needs GPUs."""

BUNDLED_TASKS = ["arith_mc", "compare_mc", "reverse_gen", "successor_gen", "story_ppl"]
TINY_MODEL = PROJECT_ROOT / "plugins" / "models" / "tiny_char"


def assert_mlflow_matches_results(client, run_dir: Path, tasks: list[str]) -> None:
    """One parent run, one child per dataset, and every numeric lm-eval metric equal in both."""
    import json

    experiment = client.get_experiment_by_name("harness")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1
    parent = parents[0]
    summary = json.loads((run_dir / "summary.json").read_text())
    from harness.tracking.names import parent_run_name, run_uid

    datasets = list(summary["datasets"])
    uid = run_uid(run_dir)
    named = parent_run_name(summary["model"], summary["strategy"], datasets, uid)
    assert parent.info.run_name == named  # model/strategy, its datasets, the run uid's head
    assert parent.info.status == "FINISHED"
    assert parent.data.params["model.name"] == summary["model"]
    assert parent.data.params["strategy.name"] == summary["strategy"]
    for task in tasks:
        assert parent.data.params[f"dataset.{task}.task"] == task
    assert parent.data.metrics["load_time_s"] == pytest.approx(summary["load_time_s"], abs=1e-3)
    assert sorted(c.info.run_name for c in children) == sorted(tasks)
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}

    by_name = {c.info.run_name: c for c in children}
    compared = 0
    for task in tasks:
        result = json.loads((run_dir / "results" / f"{task}.json").read_text())
        for key, value in result["results"][task].items():
            if "," not in key or not isinstance(value, int | float):
                continue
            metric, _, filt = key.partition(",")
            name = metric if filt == "none" else f"{metric}/{filt}"
            assert parent.data.metrics[f"{task}/{name}"] == pytest.approx(value, rel=1e-12)
            assert by_name[task].data.metrics[name] == pytest.approx(value, rel=1e-12)
            compared += 1
        timing = summary["datasets"][task]
        assert by_name[task].data.metrics["eval_time_s"] == pytest.approx(timing["eval_time_s"])
        assert parent.data.metrics[f"{task}/tokens_per_s"] == pytest.approx(timing["tokens_per_s"])
        artifacts = [a.path for a in client.list_artifacts(by_name[task].info.run_id)]
        assert f"{task}.json" in artifacts
    assert compared >= 2 * len(tasks)
    parent_artifacts = [a.path for a in client.list_artifacts(parent.info.run_id)]
    assert "config.yaml" in parent_artifacts and "summary.json" in parent_artifacts


def assert_clean_failure(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    """Non-zero exit, no traceback, no model loaded, and every needle in the output."""
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0, text[-2000:]
    assert "Traceback" not in text, text[-4000:]
    # app.run prints "loading <model> (<strategy>) ..." just before it builds the engine.
    assert not re.search(r"^loading \S+ \(", proc.stdout, re.M), "a model was loaded"
    for needle in needles:
        assert needle in text, f"{needle!r} not in:\n{text[-3000:]}"


def fake_hub_cache(
    cache: Path, repo_id: str, config: dict, num_params: int, commit: str = "c0ffee" * 6 + "abcd"
) -> Path:
    """A Hugging Face hub cache holding what `hf download <id> config.json
    model.safetensors.index.json` leaves: refs/main, blobs, and snapshot links to them."""
    import hashlib
    import json

    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    (repo / "blobs").mkdir(exist_ok=True)
    index = {"metadata": {"total_size": 2 * num_params}, "weight_map": {}}
    for name, content in (
        ("config.json", json.dumps(config, indent=2)),
        ("model.safetensors.index.json", json.dumps(index)),
    ):
        blob = repo / "blobs" / hashlib.sha256(content.encode()).hexdigest()
        blob.write_text(content)
        (snapshot / name).symlink_to(os.path.relpath(blob, snapshot))
    return snapshot
