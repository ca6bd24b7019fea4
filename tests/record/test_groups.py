"""A group dataset whole, without a model: lm-eval's result of a group parted into its subgroups
and subtasks (record/groups.py), kept in the outcome and summary.json, logged as MLflow names
and tags (tracking/groups.py), shown in the console's table (views.format_summary) and read
back by the report (report/table.py, report/render.py).

The result below has the shape lm-eval 0.4.13 returns for a group with a subgroup (taken from a
real run of the end-to-end test's group, tests/test_groups.py, its figures changed).
"""

from __future__ import annotations

import csv
import io
import json

import pytest

from harness.record.groups import breakdown, member_key, members, split_metrics
from harness.record.outcome import DatasetOutcome
from harness.record.summary import RunSummary
from harness.tracking.groups import TREE_TAG, member_metrics, read_tree, tree_tags


def entry(name: str, acc: float, **more: float) -> dict:
    return {"name": name, "alias": name, "sample_len": 30, "acc,none": acc,
            "acc_stderr,none": acc / 10, **more}  # fmt: skip


RESULT = {
    "results": {
        "arith_mc": entry("arith_mc", 1.0, **{"acc_norm,none": 0.9}),
        "compare_mc": entry("compare_mc", 0.8),
        "compare_mc_2shot": entry("compare_mc_2shot", 0.6),
        "synth_pairs": {**entry("synth_pairs", 0.7), "sample_count": {"acc,none": 60}},
        "synth_suite": {**entry("synth_suite", 0.8), "sample_count": {"acc,none": 90}},
        "elsewhere": entry("elsewhere", 0.1),  # another dataset's task: not this group's
    },
    "groups": {"synth_pairs": entry("synth_pairs", 0.7), "synth_suite": entry("synth_suite", 0.8)},
    "group_subtasks": {
        "synth_suite": ["arith_mc", "synth_pairs"],
        "synth_pairs": ["compare_mc", "compare_mc_2shot"],
    },
}


def group_outcome() -> DatasetOutcome:
    outcome = DatasetOutcome(name="suite", task="synth_suite", metrics={"acc": 0.8})
    outcome.take_groups(RESULT)
    return outcome


def test_a_groups_result_parts_into_its_subgroups_and_subtasks_depth_first():
    tree, metrics = breakdown(RESULT, "synth_suite")
    assert tree == RESULT["group_subtasks"]
    assert list(metrics) == ["arith_mc", "synth_pairs", "compare_mc", "compare_mc_2shot"]
    assert metrics["arith_mc"] == {"acc": 1.0, "acc_stderr": 0.1, "acc_norm": 0.9}
    assert metrics["synth_pairs"] == {"acc": 0.7, "acc_stderr": pytest.approx(0.07)}
    shown = [(m.name, m.depth, m.is_group, m.parent) for m in members(tree, "synth_suite")]
    assert shown == [
        ("arith_mc", 1, False, "synth_suite"),
        ("synth_pairs", 1, True, "synth_suite"),
        ("compare_mc", 2, False, "synth_pairs"),
        ("compare_mc_2shot", 2, False, "synth_pairs"),
    ]
    from harness.views import group_size

    assert group_size(tree, list(metrics)) == "3 subtasks in 1 subgroup"
    assert group_size(tree, ["compare_mc", "compare_mc_2shot"]) == "2 subtasks"
    # a single task has none, whatever else the result holds
    assert breakdown(RESULT, "arith_mc") == ({}, {})
    assert breakdown({"results": {"t": entry("t", 1.0)}}, "t") == ({}, {})


def test_the_outcome_keeps_them_through_summary_json_and_events():
    outcome = group_outcome()
    summary = RunSummary(model="m", strategy="s", datasets={"suite": outcome})
    again = RunSummary.from_dict(json.loads(json.dumps(summary.to_dict())))
    back = again.datasets["suite"]
    assert back.group_subtasks == RESULT["group_subtasks"]
    assert back.subtasks == outcome.subtasks and list(back.subtasks) == list(outcome.subtasks)
    assert back.metrics == {"acc": 0.8}  # the dataset's own figure is the group's, as before


def test_mlflow_names_and_tags_of_a_group_read_back_as_they_were():
    outcome = group_outcome()
    logged = member_metrics(outcome)
    assert logged["compare_mc_2shot/acc"] == 0.6 and logged["synth_pairs/acc"] == 0.7
    assert len(logged) == sum(len(m) for m in outcome.subtasks.values())
    tags = tree_tags(outcome)
    assert list(tags) == [TREE_TAG] and read_tree(tags) == outcome.group_subtasks
    child = {"acc": 0.8, "eval_time_s": 3.0, **logged}
    own, by_member = split_metrics(child, read_tree(tags), "synth_suite")
    assert own == {"acc": 0.8, "eval_time_s": 3.0}
    assert by_member == outcome.subtasks
    assert tree_tags(DatasetOutcome(name="t", task="t")) == {}
    assert read_tree({}) == {} and read_tree({TREE_TAG: "{not json"}) == {}


def test_a_tree_longer_than_an_mlflow_tag_goes_in_pieces():
    """mmlu-sized and beyond: a tree of thousands of names outgrows one tag (8,000 characters)."""
    outcome = DatasetOutcome(name="big", task="big")
    outcome.group_subtasks = {
        "big": [f"big_lang_{i}" for i in range(40)],
        **{f"big_lang_{i}": [f"big_lang_{i}_subject_{j}" for j in range(57)] for i in range(40)},
    }
    tags = tree_tags(outcome)
    assert len(tags) > 2 and all(len(v) <= 8000 for v in tags.values())
    assert read_tree(tags) == outcome.group_subtasks


def test_names_mlflow_refuses_are_made_safe_or_left_out(caplog):
    """MLflow's own rules (3.17), read from its source (importing MLflow takes seconds): a name
    it refused would turn tracking off for the run."""
    import importlib.util
    import re
    from pathlib import Path

    from harness.record.groups import MAX_KEY
    from harness.tracking.groups import TAG_PIECE

    spec = importlib.util.find_spec("mlflow")
    assert spec is not None and spec.origin is not None
    source = (Path(spec.origin).parent / "utils" / "validation.py").read_text()
    assert f"MAX_ENTITY_KEY_LENGTH = {MAX_KEY}\n" in source
    assert f"MAX_TAG_VAL_LENGTH = {TAG_PIECE}\n" in source
    allowed = re.search(r'return re\.match\(r"(\^\[/\\w\.\\- :\]\*\$)", name\)', source)
    assert allowed, "MLflow's rule for metric names changed"
    assert not re.match(allowed.group(1), "gsm8k_cot/exact_match/maj@64")
    assert re.match(allowed.group(1), member_key("gsm8k_cot", "exact_match/maj@64"))
    assert member_key("gsm8k_cot", "exact_match/maj@64") == "gsm8k_cot/exact_match/maj_64"
    assert member_key("mmlu_abstract_algebra", "acc") == "mmlu_abstract_algebra/acc"
    outcome = DatasetOutcome(name="d", task="g")
    outcome.subtasks = {"x" * 300: {"acc": 1.0}, "ok": {"acc": 0.5}}
    assert member_metrics(outcome) == {"ok/acc": 0.5}
    assert "not logged" in caplog.text


def summary_dict() -> dict:
    single = DatasetOutcome(name="arith_mc", task="arith_mc", metrics={"acc": 0.5})
    summary = RunSummary(
        model="m", strategy="s", datasets={"suite": group_outcome(), "arith_mc": single}
    )
    return summary.to_dict()


def test_the_console_table_counts_a_groups_subtasks_and_the_log_holds_them_all():
    from harness.views import format_summary

    short = format_summary(summary_dict())
    assert "suite (3 subtasks in 1 subgroup)  ok" in short
    assert "compare_mc_2shot" not in short
    assert "subgroups and subtasks of suite: in harness.log" in short
    whole = format_summary(summary_dict(), breakdown=True).splitlines()
    at = next(i for i, line in enumerate(whole) if line.startswith("suite (3 subtasks"))
    names = [line.split()[0] for line in whole[at + 1 : at + 5]]
    assert names == ["arith_mc", "synth_pairs", "compare_mc", "compare_mc_2shot"]
    indent = [len(line) - len(line.lstrip()) for line in whole[at + 1 : at + 5]]
    assert indent == [2, 2, 4, 4]
    assert "acc=0.6" in whole[at + 4] and "stderr" not in whole[at + 4]
    assert whole[at + 5].startswith("arith_mc ")  # the next dataset
    assert not any("in harness.log" in line for line in whole)


def collection():
    """Two runs of one group dataset as the report reads them from MLflow."""
    from harness.report.collect import Collection, DatasetRun, ParentRun

    def run(run_id: str, model: str, shift: float) -> ParentRun:
        outcome = group_outcome()
        metrics = {"acc": 0.8 - shift, "acc_stderr": 0.08, "eval_time_s": 2.0, "requests": 10.0}
        metrics |= {
            k: v if "stderr" in k else v - shift for k, v in member_metrics(outcome).items()
        }
        tags = {"task": "synth_suite", **tree_tags(outcome)}
        parent = ParentRun(run_id, model, "single", "FINISHED", 0, "", {"total_time_s": 5.0})
        parent.datasets["suite"] = DatasetRun("suite", run_id + "c", "FINISHED", metrics, tags)
        return parent

    return Collection("sqlite:///x", "harness", "0", [run("r1", "a", 0.0), run("r2", "b", 0.25)])


def test_the_report_keeps_the_groups_row_and_shows_every_member():
    from harness.report.render import to_csv, to_html, to_markdown
    from harness.report.table import build_table

    table = build_table(collection())
    assert table.datasets == ["suite"] and table.metrics == {"suite": "acc"}  # its own headline
    part = table.groups["suite"]
    assert [m.name for m in part.members] == [
        "arith_mc",
        "synth_pairs",
        "compare_mc",
        "compare_mc_2shot",
    ]
    assert part.metrics == dict.fromkeys(
        ["arith_mc", "synth_pairs", "compare_mc", "compare_mc_2shot"], "acc"
    )
    rows = list(csv.DictReader(io.StringIO(to_csv(table))))
    assert [r["suite/acc"] for r in rows] == ["0.8", repr(0.8 - 0.25)]
    assert rows[1]["suite/compare_mc_2shot/acc"] == repr(0.6 - 0.25)
    assert rows[0]["suite/synth_pairs/acc_stderr"] == repr(0.7 / 10)
    head = next(csv.reader(io.StringIO(to_csv(table))))
    own = head.index("suite/acc")
    assert head[own : own + 4] == [
        "suite/acc",
        "suite/acc_stderr",
        "suite/arith_mc/acc",
        "suite/arith_mc/acc_stderr",
    ]
    md = to_markdown(collection(), table, None)
    assert "## suite (lm-eval group): 3 subtasks in 1 subgroup" in md
    assert "| · compare_mc_2shot | acc | 0.6 ± 0.06 | 0.35 ± 0.06 |" in md
    page = to_html(collection(), table, None)
    details = page[
        page.index('<details class="group" id="group-suite">') : page.index("</details>")
    ]
    assert "<summary>suite (lm-eval group): 3 subtasks in 1 subgroup</summary>" in details
    assert details.count('<tr class="subtask"') == 3 and details.count('<tr class="subgroup"') == 1
    assert "compare_mc_2shot</td><td>acc</td>" in details and "0.35 ± 0.06" in details
