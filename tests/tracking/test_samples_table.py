"""A dataset's per-sample table for MLflow's UI, built from its samples file (no MLflow needed):
rows, columns, caps, masking, and the links that open it."""

from __future__ import annotations

import gzip
import json
import secrets
from pathlib import Path

from harness.tracking import samples_compare_link, samples_table_link
from harness.tracking.samples_table import (
    PROMPT_CHARS,
    TEXT_CHARS,
    arguments_hash,
    sample_row,
    samples_table,
    tables_tag,
)

FIXTURE = Path(__file__).parents[1] / "fixtures" / "run_dir_fd5f124" / "samples"

MC = {  # a multiple choice as lm-eval 0.4.13 records it (arith_mc's doc 1)
    "task": "arith_mc",
    "doc_id": 1,
    "target": 0,
    "arguments": [["17+17=", " 34"], ["17+17=", " 42"], ["17+17=", " 31"]],
    "filtered_resps": [[-3.0, False], [-0.1, True], [-9.0, False]],
    "filter": "none",
    "metrics": ["acc", "acc_norm"],
    "acc": 0.0,
    "acc_norm": True,
}


def test_a_multiple_choice_row_shows_the_choices_as_text():
    row = sample_row(MC)
    assert row["sample"] == "arith_mc/1"
    assert row["target"] == "34" and row["output"] == "42"  # the likeliest continuation
    assert row["acc"] == 0.0 and row["acc_norm"] == 1.0
    assert (row["task"], row["doc_id"], row["filter"]) == ("arith_mc", 1, "none")
    assert row["request_hash"] == arguments_hash(MC["arguments"])
    other = sample_row({**MC, "arguments": [["16+18=", c] for _, c in MC["arguments"]]})
    assert other["request_hash"] != row["request_hash"]  # another prompt, another identity
    assert list(row)[:4] == ["sample", "prompt", "target", "output"]


def test_a_generation_row_keeps_its_filter_in_the_key_and_caps_its_texts():
    long_prompt = "few-shot example. " * 100 + "Q: the question?"
    record = {
        "task": "gsm8k",
        "doc_id": 7,
        "target": "x" * 1000,
        "arguments": [[[long_prompt], {"until": ["\n"]}]],
        "filtered_resps": ["y" * 1000],
        "filter": "strict-match",
        "metrics": ["exact_match"],
        "exact_match": float("nan"),
    }
    row = sample_row(record)
    assert row["sample"] == "gsm8k/7/strict-match"
    assert row["prompt"].endswith("Q: the question?") and row["prompt"].startswith("…")
    assert len(row["prompt"]) == PROMPT_CHARS + 1
    assert len(row["target"]) == len(row["output"]) == TEXT_CHARS + 1
    assert row["exact_match"] is None  # NaN is no JSON a browser parses


def test_texts_are_masked():
    token = "hf_" + secrets.token_hex(17)
    row = sample_row({**MC, "arguments": [[f"key {token} 17+17=", c] for _, c in MC["arguments"]]})
    assert token not in json.dumps(row) and "***" in row["prompt"]


def test_the_table_of_a_samples_file_has_a_row_per_record():
    path = FIXTURE / "arith_mc.jsonl.gz"
    records = [json.loads(line) for line in gzip.decompress(path.read_bytes()).splitlines()]
    table = samples_table(path)
    columns = table["columns"]
    assert columns == [
        *("sample", "prompt", "target", "output", "acc", "acc_norm"),
        *("task", "doc_id", "filter", "request_hash"),
    ]
    rows = [dict(zip(columns, r, strict=True)) for r in table["data"]]
    assert [r["doc_id"] for r in rows] == [r["doc_id"] for r in records]
    assert [r["acc"] for r in rows] == [r["acc"] for r in records]
    json.dumps(table, allow_nan=False)  # what the UI's JSON.parse reads
    tag = json.loads(tables_tag(["arith_mc", "reverse_gen"]))
    assert tag == [
        {"path": "samples/arith_mc.table.json", "type": "table"},
        {"path": "samples/reverse_gen.table.json", "type": "table"},
    ]


def test_the_links_open_a_table_and_the_runs_side_by_side():
    link = samples_table_link("http://h:5000/", "7", "abc", "arith_mc")
    assert link == (
        "http://h:5000/#/experiments/7/runs/abc/artifacts/samples/arith_mc.table.json"
        "?workflowType=machine_learning"
    )
    local = samples_table_link("sqlite:///x/mlflow.db", "7", "abc", "arith_mc")
    assert local is not None and local.startswith("http://127.0.0.1:5000/#/")  # mlflow ui's
    assert samples_table_link("http://h:5000", None, "abc", "arith_mc") is None
    assert samples_table_link("http://h:5000", "7", None, "arith_mc") is None
    both = samples_compare_link("http://h:5000", "7", ["a1", "b2"])
    assert both == (
        "http://h:5000/#/experiments/7/runs?workflowType=machine_learning&compareRunsMode=ARTIFACT"
        "&searchFilter=attributes.run_id%20IN%20%28%27a1%27%2C%20%27b2%27%29"
    )
    assert samples_compare_link("http://h:5000", None) is None
