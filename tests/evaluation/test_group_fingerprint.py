"""A group's fingerprint covers its subtasks and its shape (issue 34): a subtask added to or
removed from the group's YAML changes the result key and the journal key; a subtask moved to
another subgroup, or the group's aggregation changed, changes the result key only (the requests,
and so the journal's answers, are the same). Built by lm-eval from the test's own task folder
over the bundled offline tasks (tests/test_groups.py's group); no model."""

from __future__ import annotations

from pathlib import Path

from harness.config.schema import DatasetConfig
from harness.evaluation.fingerprint import group_identity, journal_key, task_identity
from harness.evaluation.tasks import BUNDLED_TASKS_DIR, PreparedDataset
from tests.test_groups import PAIRS, SUITE, write_group


def prepared(folder: Path, suite: str = SUITE, pairs: str = PAIRS) -> PreparedDataset:
    from lm_eval.tasks import TaskManager

    write_group(folder)
    (folder / "synth_suite.yaml").write_text(suite)
    (folder / "synth_pairs.yaml").write_text(pairs)
    paths = [str(BUNDLED_TASKS_DIR), str(folder)]
    manager = TaskManager(include_path=paths, include_defaults=False)
    group = manager.load(["synth_suite"])["groups"]["synth_suite"]
    return PreparedDataset("suite", DatasetConfig(task="synth_suite"), group, False, manager)


def keys(dataset: PreparedDataset) -> tuple[dict, dict]:
    """The parts of a dataset's result key that the task decides, and of its journal key."""
    key = {"task": task_identity(dataset), "groups": group_identity(dataset)}
    return key, journal_key(key)


def test_a_subtask_added_or_removed_changes_the_result_and_journal_keys(tmp_path):
    # One folder throughout: a task's config records its YAML's path (lm-eval's config_source).
    base = keys(prepared(tmp_path))
    assert keys(prepared(tmp_path)) == base  # stable across builds
    removed = PAIRS.replace("  - compare_mc_2shot\n", "")
    added = SUITE.replace("  - arith_mc\n", "  - arith_mc\n  - successor_gen\n")
    for name, suite, pairs in [("removed", SUITE, removed), ("added", added, PAIRS)]:
        result, journal = keys(prepared(tmp_path, suite, pairs))
        assert result["task"] != base[0]["task"], name
        assert journal != base[1], name


def test_a_moved_subtask_or_another_aggregation_changes_the_result_key_only(tmp_path):
    base_result, base_journal = keys(prepared(tmp_path))
    moved_suite = SUITE.replace("  - arith_mc\n", "  - arith_mc\n  - compare_mc\n")
    moved_pairs = PAIRS.replace("  - compare_mc\n", "")
    unweighted = SUITE.replace("weight_by_size: true", "weight_by_size: false")
    for name, suite, pairs in [("moved", moved_suite, moved_pairs), ("weights", unweighted, PAIRS)]:
        result, journal = keys(prepared(tmp_path, suite, pairs))
        assert result["task"] == base_result["task"], name  # the same leaves, the same data
        assert result["groups"] != base_result["groups"], name
        assert journal == base_journal, name


def test_a_single_task_has_no_group_identity(tmp_path):
    dataset = prepared(tmp_path)
    leaf = dataset.task.get_all_tasks()[0]
    single = PreparedDataset("one", DatasetConfig(task="arith_mc"), leaf, False, dataset.manager)
    assert group_identity(single) is None
