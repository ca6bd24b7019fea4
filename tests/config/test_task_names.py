"""Any lm-eval task or group by its own name: ``dataset=[<name>]`` without an option file
(plugins/hydra_plugins/harness_launcher/task_source.py), with lm-eval's defaults, overridable."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml

from harness.paths import PLUGINS_DIR
from tests.conftest import run_harness

pytestmark = pytest.mark.slow


def test_a_task_name_alone_is_a_dataset_with_overrides(tmp_path):
    """Plan-only: composed from the name alone (no option file, no lm-eval index: fast)."""
    proc = run_harness(
        ["dataset=[arc_challenge,mmlu_pro]", "dataset.arc_challenge.num_fewshot=25",
         "plan_only=true", f"output_dir={tmp_path / 'plan'}"],
        tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    datasets = yaml.safe_load((tmp_path / "plan" / "config.yaml").read_text())["dataset"]
    assert datasets["arc_challenge"]["task"] == "arc_challenge"
    assert datasets["arc_challenge"]["num_fewshot"] == 25
    assert datasets["mmlu_pro"]["task"] == "mmlu_pro" and datasets["mmlu_pro"]["limit"] is None


def test_a_users_task_by_its_name_runs(tmp_path):
    """A task in the user's own folder (task_paths), named on the command line: evaluated."""
    tasks = tmp_path / "my_tasks"
    shutil.copytree(PLUGINS_DIR / "tasks" / "synth", tasks)
    text = (tasks / "arith_mc.yaml").read_text().replace("task: arith_mc", "task: my_sums")
    (tasks / "my_sums.yaml").write_text(text)
    proc = run_harness(
        [f"+task_paths=[{tasks}]", "dataset=[my_sums]", "dataset.my_sums.limit=20",
         "tracking=none", f"output_dir={tmp_path / 'run'}"],
        tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["datasets"]["my_sums"]["task"] == "my_sums"
    assert summary["datasets"]["my_sums"]["metrics"]["acc"] >= 0.9
