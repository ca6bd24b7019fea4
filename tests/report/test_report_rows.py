"""The report hides nothing without saying so (issue 20): a limit sweep, two checkpoints of one
step name, and a ``--model`` filter naming a model with no runs; and one checkpoint typed as an
absolute and as a relative path is one row (issue 36)."""

from __future__ import annotations

import csv
import shutil

import pytest

from tests.conftest import TINY_MODEL, run_harness, run_module

pytestmark = pytest.mark.slow


def test_rows_are_told_apart_by_what_differs(tmp_path):
    common = ["dataset=[arith_mc]", "outputs_root=outputs"]
    for limit in (10, 20):  # a quick run must not hide the fuller one
        proc = run_harness([*common, f"dataset.arith_mc.limit={limit}"], tmp_path)
        assert proc.returncode == 0, proc.stderr[-2000:]
    for folder in ("runA", "runB"):  # two training runs, one step name
        checkpoint = tmp_path / folder / "checkpoint-500"
        shutil.copytree(TINY_MODEL, checkpoint)
        proc = run_harness(
            [*common, "model=hf", f"model.pretrained={checkpoint}", "dataset.arith_mc.limit=10"],
            tmp_path,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert f"plan: {folder.lower()}_checkpoint_500 " in proc.stdout, proc.stdout[:500]
    for folder in ("runA", "runB"):  # the same checkpoints under one name chosen by the user
        checkpoint = tmp_path / folder / "checkpoint-500"
        proc = run_harness(
            [
                *common,
                "model=hf",
                f"model.pretrained={checkpoint}",
                "model.name=ckpt",
                "dataset.arith_mc.limit=10",
            ],
            tmp_path,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
    relative = [*common, "model=hf", "model.pretrained=runA/checkpoint-500", "model.name=ckpt"]
    proc = run_harness([*relative, "dataset.arith_mc.limit=10"], tmp_path)  # the same, typed anew
    assert proc.returncode == 0 and "no model to load" in proc.stdout, proc.stderr[-2000:]

    report = run_module("harness.report", "--out", str(tmp_path / "report"), cwd=tmp_path)
    assert report.returncode == 0, report.stderr[-3000:]
    rows = list(csv.DictReader((tmp_path / "report" / "report.csv").open()))
    by_model: dict[str, list[dict]] = {}
    for row in rows:
        by_model.setdefault(row["model"], []).append(row)
    assert sorted(by_model) == ["ckpt", "runa_checkpoint_500", "runb_checkpoint_500", "tiny_char"]
    variants = sorted(r["variant"] for r in by_model["tiny_char"])
    assert variants == ["limit=10", "limit=20"], variants
    settings = sorted(r["settings"] for r in by_model["tiny_char"])
    assert settings == ["dataset.arith_mc.limit=10.0", "dataset.arith_mc.limit=20.0"], settings
    ckpt = sorted(by_model["ckpt"], key=lambda r: r["variant"])
    assert [r["variant"] for r in ckpt] == [
        "pretrained=.../runA/checkpoint-500",
        "pretrained=.../runB/checkpoint-500",
    ]
    assert [r["checkpoint"] for r in ckpt] == [
        str((tmp_path / folder / "checkpoint-500").resolve()) for folder in ("runA", "runB")
    ]
    assert [r["older_runs"] for r in ckpt] == ["1", "0"]  # runA typed two ways: one row
    hashes = {r["checkpoint_hash"] for r in ckpt}  # the run's record: copies of one model
    assert len(hashes) == 1 and len(hashes.pop()) == 16
    assert all(r["variant"] == "" for r in by_model["runa_checkpoint_500"])

    asked = run_module(
        "harness.report", "--model", "tiny_char,nobody", "--out", str(tmp_path / "r2"), cwd=tmp_path
    )
    assert asked.returncode == 0, asked.stderr[-3000:]
    assert "note: --model nobody: no FINISHED or FAILED run" in asked.stderr
