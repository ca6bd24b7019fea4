"""One run, one directory, even when named (issue 35): a second run into a used ``output_dir``
resumes that run (the same config) or is refused with the fix (exit 2); it never merges."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from harness.errors import ConfigError
from harness.record.events import EventLog
from harness.record.rundir import RunDirectory
from harness.runner.checked import refuse_used_directory
from tests.conftest import run_harness

CONFIG = {"model": {"name": "tiny_char"}, "dataset": {"arith_mc": {"limit": 4}}, "verbose": False}


def used_directory(tmp_path, ended: bool = True, pid: int | None = None) -> RunDirectory:
    run_dir = RunDirectory(tmp_path / "run")
    run_dir.root.mkdir()
    run_dir.write_config(CONFIG)
    events = EventLog(run_dir.events)
    events.emit("planned", run_uid="u1", pid=pid or 1, host="elsewhere" if pid is None else None)
    if ended:
        events.emit("run_done", status="FINISHED")
    events.close()
    return run_dir


def test_an_unused_or_plan_only_directory_takes_a_new_run(tmp_path):
    run_dir = RunDirectory(tmp_path)
    assert refuse_used_directory(run_dir, CONFIG) is False
    run_dir.write_config({**CONFIG, "verbose": True})  # plan-only leaves config and plan only
    assert refuse_used_directory(run_dir, CONFIG) is False


def test_the_same_config_resumes_the_run_there(tmp_path):
    run_dir = used_directory(tmp_path)
    assert refuse_used_directory(run_dir, CONFIG) is True
    assert refuse_used_directory(run_dir, {**CONFIG, "verbose": True}) is True  # how it's shown


def test_another_config_is_refused_naming_what_differs_and_the_fix(tmp_path):
    run_dir = used_directory(tmp_path)
    other = {**CONFIG, "dataset": {"arith_mc": {"limit": 5}, "reverse_gen": {"limit": 2}}}
    with pytest.raises(ConfigError) as refused:
        refuse_used_directory(run_dir, other)
    text = str(refused.value)
    assert f"output_dir={run_dir.root} holds another run" in text
    assert "dataset.arith_mc.limit, dataset.reverse_gen.limit" in text
    assert "Fix: output_dir=<a folder of its own>" in text and f"remove {run_dir.root}" in text
    assert refused.value.exit_code == 2


def test_a_run_still_going_there_is_refused_even_with_the_same_config(tmp_path):
    import socket

    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        run_dir = used_directory(tmp_path, ended=False, pid=alive.pid)
        lines = run_dir.events.read_text().splitlines()
        first = json.loads(lines[0]) | {"host": socket.gethostname()}
        run_dir.events.write_text(json.dumps(first) + "\n")
        with pytest.raises(ConfigError, match=f"still being written there by process {alive.pid}"):
            refuse_used_directory(run_dir, CONFIG)
    finally:
        alive.kill()
        alive.wait()
    assert refuse_used_directory(run_dir, CONFIG) is True  # it ended (killed): resumable


@pytest.mark.slow
def test_a_second_run_into_a_named_output_dir_never_merges(tmp_path):
    out = tmp_path / "mine"
    common = ["dataset=[arith_mc]", "tracking=none", f"output_dir={out}"]
    first = run_harness([*common, "dataset.arith_mc.limit=3"], tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    events = RunDirectory(out).events
    before = events.read_text()
    kept = {p: p.read_bytes() for p in [out / "harness.log", *(out / ".hydra").iterdir()]}

    other = run_harness([*common, "dataset.arith_mc.limit=4"], tmp_path)
    assert other.returncode == 2, other.stdout[-1000:] + other.stderr[-2000:]
    assert "holds another run" in other.stderr and "dataset.arith_mc.limit" in other.stderr
    assert "Traceback" not in other.stderr
    assert events.read_text() == before  # nothing of the refused run in the record
    assert {p: p.read_bytes() for p in kept} == kept  # Hydra's job never wrote there either

    again = run_harness([*common, "dataset.arith_mc.limit=3"], tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "resuming the run in" in again.stdout
    planned = [json.loads(x) for x in events.read_text().splitlines()]
    uids = {e["run_uid"] for e in planned if e["event"] == "planned"}
    assert len(uids) == 1  # the same run, resumed
