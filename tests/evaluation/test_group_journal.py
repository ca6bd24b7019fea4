"""A group keeps the journal's guarantee (issue 34): a run SIGKILLed while it evaluates a group
(a big subtask and a subgroup of two bundled ones, the test's own task folder) resumes from the
journal and ends with the group's, every subgroup's and every subtask's figures equal to those
of a run that was never interrupted."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.big_task import write_big_task
from tests.conftest import run_harness
from tests.evaluation.test_journal import journal_files, kill_when_journaled, start, summary_of

pytestmark = pytest.mark.slow

DOCS = 1000
GROUP = """group: big_group
task:
  - big_mc
  - big_pairs
aggregate_metric_list:
  - metric: acc
    weight_by_size: true
metadata:
  version: 1.0
"""
PAIRS = """group: big_pairs
task:
  - arith_mc
  - compare_mc
aggregate_metric_list:
  - metric: acc
metadata:
  version: 1.0
"""


def group_args(tasks: Path, out: Path) -> list[str]:
    return [f"outputs_root={out}", "tracking=none", f"task_paths=[{tasks}]",
            f"allowed_roots=[{tasks}]", "dataset=[big_group]", "dataset.big_group.limit=1000",
            "strategy.journal_slice_s=0.5"]  # fmt: skip


def test_a_run_killed_inside_a_group_resumes_with_equal_figures(tmp_path):
    (tmp_path / "tasks").mkdir()
    tasks = write_big_task(tmp_path / "tasks", docs=DOCS)
    (tasks / "big_group.yaml").write_text(GROUP)
    (tasks / "big_pairs.yaml").write_text(PAIRS)
    whole = run_harness(group_args(tasks, tmp_path / "whole"), tmp_path)
    assert whole.returncode == 0, whole.stdout[-2000:] + whole.stderr[-3000:]
    expected = summary_of(tmp_path / "whole")["datasets"]["big_group"]
    assert expected["group_subtasks"]["big_group"] == ["big_mc", "big_pairs"]

    out = tmp_path / "killed"
    kept = kill_when_journaled(start(group_args(tasks, out), tmp_path), out, 1500)
    assert 0 < kept < expected["requests"], kept
    again = run_harness(group_args(tasks, out), tmp_path)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-3000:]
    resumed = summary_of(out)["datasets"]["big_group"]
    assert resumed["requests_journaled"] == kept
    assert resumed["requests"] == expected["requests"] - kept
    assert resumed["metrics"] == expected["metrics"]
    assert resumed["subtasks"] == expected["subtasks"]  # every subgroup and subtask
    assert set(resumed["subtasks"]) == {"big_mc", "big_pairs", "arith_mc", "compare_mc"}
    assert journal_files(out) == []
