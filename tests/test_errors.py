"""Bad names and missing data end with a clear message, no traceback, and no model loaded."""

from __future__ import annotations

import shutil

import pytest

from harness.paths import PLUGINS_DIR
from tests.conftest import assert_clean_failure, run_harness

pytestmark = pytest.mark.slow


def test_unknown_model_name(tmp_path):
    proc = run_harness(["model=falcon_41b"], tmp_path)
    assert_clean_failure(proc, "model=falcon_41b", "Did you mean 'falcon_40b'", "tiny_char")


def test_unknown_dataset_name(tmp_path):
    proc = run_harness(["dataset=[arith_mc,hellaswagg]"], tmp_path)
    assert_clean_failure(
        proc, "dataset 'hellaswagg'", "Did you mean 'hellaswag'", "lm_eval ls tasks"
    )


def test_unknown_task_name_suggests_the_closest(tmp_path):
    proc = run_harness(
        ["dataset=[arith_mc]", "dataset.arith_mc.task=arith_mcc", "tracking=none"], tmp_path
    )
    assert_clean_failure(proc, "'arith_mcc'", "Did you mean 'arith_mc'")


def test_missing_data_file(tmp_path):
    tasks = tmp_path / "mytasks"
    shutil.copytree(PLUGINS_DIR / "tasks" / "synth", tasks)
    for yaml_file in tasks.glob("*.yaml"):  # rename so they do not shadow the bundled tasks
        text = yaml_file.read_text().replace(
            f"task: {yaml_file.stem}", f"task: my_{yaml_file.stem}"
        )
        yaml_file.write_text(text)
    (tasks / "data" / "compare_mc.jsonl").unlink()
    conf = tmp_path / "conf" / "dataset"
    conf.mkdir(parents=True)
    (conf / "mine.yaml").write_text(
        f"# @package dataset.mine\ntask: my_compare_mc\ntask_path: {tasks}\n"
    )
    proc = run_harness(
        [
            f"hydra.searchpath=[file://{tmp_path / 'conf'}]",
            "dataset=[arith_mc,mine]",
            "tracking=none",
        ],
        tmp_path,
    )
    assert_clean_failure(proc, "dataset 'mine'", "compare_mc.jsonl", "generate_data.py")


def test_builtin_task_without_cached_data_offline(tmp_path):
    proc = run_harness(["dataset=[arith_mc,arc_easy]", "tracking=none"], tmp_path, timeout=300)
    assert_clean_failure(
        proc,
        "dataset 'arc_easy'",
        "allenai/ai2_arc",
        "hf download allenai/ai2_arc --repo-type dataset",
    )


def test_every_problem_reported_at_once(tmp_path):
    proc = run_harness(
        ["strategy.batch_size=0", "dataset.arith_mc.limit=0", "tracking=none"], tmp_path
    )
    assert_clean_failure(proc, "2 configuration problems", "strategy.batch_size=0", "limit=0")
