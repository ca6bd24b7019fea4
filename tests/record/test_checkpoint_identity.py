"""Which checkpoint ran, however it was typed (issue 36): the reproducibility record's checkpoint,
its resolved path and a cheap content hash, and the tags MLflow gets from it."""

from __future__ import annotations

import shutil

from harness.planning.location import locate_pretrained
from harness.record.provenance import checkpoint_identity, tags
from tests.conftest import TINY_MODEL


def test_one_checkpoint_typed_two_ways_is_one_identity(tmp_path):
    shutil.copytree(TINY_MODEL, tmp_path / "ck")
    (tmp_path / "sub").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "ck")
    found = [
        checkpoint_identity(locate_pretrained(typed, cwd=tmp_path).pretrained)
        for typed in ("./ck", "sub/../ck", "ck/", "link", str(tmp_path / "ck"))
    ]
    assert all(f == found[0] for f in found), found
    assert found[0]["path"] == str((tmp_path / "ck").resolve()) and len(found[0]["hash"]) == 16
    shutil.copytree(TINY_MODEL, tmp_path / "copy")
    copy = checkpoint_identity(str(tmp_path / "copy"))
    assert copy["path"] != found[0]["path"] and copy["hash"] == found[0]["hash"]
    config = tmp_path / "copy" / "config.json"
    config.write_text(config.read_text().replace("{", '{"touched": 1, ', 1))
    assert checkpoint_identity(str(tmp_path / "copy"))["hash"] != found[0]["hash"]


def test_a_hub_id_stands_for_itself_and_the_tags_carry_the_checkpoint():
    assert checkpoint_identity("org/model", "main") == {"path": "org/model@main", "hash": None}
    record = {
        "harness": {"version": "1", "git": None},
        "host": {"name": "h"},
        "python": "3.11",
        "libraries": {},
        "cuda": {},
        "slurm": {},
        "checkpoint": {"path": "/w/ck", "hash": "abc"},
    }
    got = tags(record)
    assert got["checkpoint.path"] == "/w/ck" and got["checkpoint.hash"] == "abc"
    del record["checkpoint"]  # a record written before it had one
    assert "checkpoint.path" not in tags(record)
