"""Plan-only checks ``dataset.<name>.samples`` where it can count a task's documents without
lm-eval, and says so where it cannot (issue 35)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from harness.evaluation.sample_count import document_count

TASK = """task: {name}
dataset_path: {fmt}
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: q
doc_to_choice: !function utils.choices
doc_to_target: 0
"""


def local_task(folder, name="my_local", fmt="json", rows=3):
    data = folder / f"{name}.{'jsonl' if fmt == 'json' else 'csv'}"
    if fmt == "json":
        data.write_text("".join(f'{{"q": "{i}"}}\n' for i in range(rows)) + "\n")
    else:
        data.write_text("q\n" + "".join(f"{i}\n" for i in range(rows)))
    (folder / f"{name}.yaml").write_text(TASK.format(name=name, fmt=fmt, data=data))
    return data


def test_a_local_json_or_csv_split_is_counted_and_a_custom_loader_is_not(tmp_path):
    local_task(tmp_path, "as_json", "json", rows=3)
    local_task(tmp_path, "as_csv", "csv", rows=4)
    (tmp_path / "custom.yaml").write_text(
        "task: custom\ncustom_dataset: !function utils.load\ntest_split: test\n"
    )
    assert document_count("as_json", [tmp_path]) == 3
    assert document_count("as_csv", [tmp_path]) == 4  # the header is no document
    assert document_count("custom", [tmp_path]) is None
    assert document_count("nowhere", [tmp_path]) is None


@pytest.mark.parametrize(("samples", "outside"), [([0, 2], None), ([0, 5, 9], [5, 9])])
def test_plan_only_refuses_samples_past_a_counted_task_and_notes_an_uncounted_one(
    tmp_path, compose_cfg, samples, outside
):
    """``dataset.arith_mc.samples=[0,99999]`` failed only after the load; a run refuses it
    once lm-eval built the task, and plan-only now too where the task's data is a local file
    (exit 2); where it is not (the bundled suite's custom loader) plan-only says it did not
    check."""
    from harness.config.schema import to_run_config
    from harness.runner import make_checked_plan

    local_task(tmp_path, rows=3)
    run = to_run_config(
        compose_cfg(
            "dataset=[arith_mc,compare_mc]",
            "dataset.compare_mc.samples=[0]",
            "plan_only=true",
            f"output_dir={tmp_path / 'run'}",
        )
    )
    mine = replace(run.dataset["arith_mc"], task="my_local", samples=samples)
    run = replace(
        run,
        dataset={**run.dataset, "arith_mc": mine},
        task_paths=[str(tmp_path)],
        allowed_roots=[str(tmp_path)],
    )
    plan = make_checked_plan(run)
    refused = [p for p in plan.problems if "samples" in p]
    if outside is None:
        assert refused == [] and plan.bad_input == []
    else:
        (problem,) = refused
        assert problem.startswith(f"dataset.arith_mc.samples={samples}: index(es) {outside}")
        assert "which has 3 documents (0 to 2)" in problem and problem in plan.bad_input
    (note,) = [n for n in plan.notes if "samples not checked" in n]
    assert note.startswith("dataset.compare_mc.samples not checked")
