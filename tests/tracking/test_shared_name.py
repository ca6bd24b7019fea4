"""Two different checkpoints never share a run name silently (issue 20): a run whose name already
holds another checkpoint's stored results warns, naming both paths and ``model.name=...``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from harness.paths import PROJECT_ROOT
from harness.record.shared_name import shared_name_warning, stored_checkpoints, warn_shared_name
from harness.record.store import ResultStore
from tests.conftest import TINY_MODEL, run_harness


def stored(root: Path, pretrained: str, dataset: str = "arith_mc", fp: str = "0" * 20) -> None:
    """A result of ``pretrained`` in the store at ``root``, as the loop saves one."""
    key = {"model": {"pretrained": pretrained, "revision": None}}
    ResultStore(root).save(dataset, fp, key, {"status": "ok"}, {"results": {}})


def test_another_checkpoint_under_the_same_name_is_named_with_the_fix(tmp_path):
    store = tmp_path / "store" / "ckpt"
    run_a, run_b = "/data/runA/checkpoint-500", "/data/runB/checkpoint-500"
    stored(store, run_a)
    message = shared_name_warning(store, "ckpt", run_b)
    assert message is not None
    assert f"model.pretrained={run_a}" in message and f"model.pretrained={run_b}" in message
    assert "model.name=runb_checkpoint_500" in message  # the fewest parts that tell them apart
    assert shared_name_warning(store, "ckpt", run_a) is None  # its own results: nothing to say
    assert shared_name_warning(tmp_path / "store" / "new", "new", run_b) is None  # first run


def test_one_folder_by_two_spellings_is_one_checkpoint(tmp_path):
    store = tmp_path / "store" / "tiny_char"
    stored(store, "plugins/models/tiny_char")  # the bundled model, as every commit keyed it
    assert shared_name_warning(store, "tiny_char", "plugins/models/tiny_char") is None
    assert shared_name_warning(store, "tiny_char", str(TINY_MODEL)) is None
    assert (
        shared_name_warning(
            store, "tiny_char", f"{PROJECT_ROOT}/plugins/models/../models/tiny_char"
        )
        is None
    )
    assert shared_name_warning(store, "tiny_char", "/elsewhere/tiny_char") is not None


def test_a_store_with_several_checkpoints_and_an_unreadable_record(tmp_path):
    store = tmp_path / "store" / "m"
    for i in range(5):
        stored(store, f"/ckpt/run{i}/m", fp=f"{i:020d}")
    stored(store, "/ckpt/run0/m", dataset="compare_mc")  # the same checkpoint again: once
    (store / "torn-00000000000000000009.json").write_text('{"payload": ')
    assert len(stored_checkpoints(store)) == 5
    message = shared_name_warning(store, "m", "/ckpt/new/m")
    assert message is not None and "and 2 more" in message
    assert "model.name=new_m" in message


def test_the_warning_is_said_and_kept_in_the_plan(tmp_path, capsys, compose_cfg):
    from harness.config.schema import to_run_config
    from harness.planning.preflight import checked_plan

    folder = tmp_path / "runB" / "checkpoint-500"
    shutil.copytree(TINY_MODEL, folder)
    cfg = compose_cfg("model=hf", f"model.pretrained={folder}", "model.name=ckpt")
    plan = checked_plan(to_run_config(cfg))
    store = tmp_path / "store" / "ckpt"
    notes = list(plan.notes)
    assert warn_shared_name(store, plan) is None and plan.notes == notes  # a first run: silent
    stored(store, "/data/runA/checkpoint-500")
    message = warn_shared_name(store, plan)
    assert message is not None and message in capsys.readouterr().err
    assert f"model.pretrained={folder}" in message
    assert plan.notes[-1] == message.removeprefix("warning: ")


@pytest.mark.slow
def test_a_second_checkpoint_run_under_one_name_warns(tmp_path):
    """End to end: ``model.name=ckpt`` for runA's checkpoint, then for runB's (needs the call in
    ``open_run``: ``warn_shared_name(store.root, plan)``)."""
    out = tmp_path / "out"
    said = []
    for run in ("runA", "runB", "runB"):
        folder = tmp_path / run / "checkpoint-500"
        if not folder.exists():
            shutil.copytree(TINY_MODEL, folder)
        proc = run_harness(
            ["model=hf", f"model.pretrained={run}/checkpoint-500", "model.name=ckpt",
             "dataset=[arith_mc]", "dataset.arith_mc.limit=4", "tracking=none",
             f"outputs_root={out}", f"hydra.run.dir={tmp_path / 'runs' / str(len(said))}"],
            tmp_path,
        )  # fmt: skip
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
        said.append(proc.stderr)
    assert "already holds results of another checkpoint" not in said[0]
    run_a, run_b = (str(tmp_path / r / "checkpoint-500") for r in ("runA", "runB"))
    assert f"model.pretrained={run_a}" in said[1] and f"model.pretrained={run_b}" in said[1]
    assert "model.name=runb_checkpoint_500" in said[1]
    assert "model.name=runb_checkpoint_500" in said[2]  # runA's results are still there
    plan = json.loads((tmp_path / "runs" / "1" / "plan.json").read_text())
    assert any("already holds results of another checkpoint" in n for n in plan["notes"])
