"""The service registry without a server: files (0600, the key kept whole), what is read back,
another user's file, liveness by pid and its start time, and stopping a whole process group."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.service.registry import (
    ServiceEntry,
    Status,
    entry_path,
    mark_dead,
    pid_start,
    read_entry,
    read_registry,
    server_alive,
    this_node,
    write_entry,
)
from harness.service.server import group_members, stop_server
from tests.processes import is_live


def entry(service_id: str = "tiny_char-abc123", **given: object) -> ServiceEntry:
    """A registry entry as the serve command writes one (no server behind it)."""
    values: dict[str, object] = dict(
        id=service_id,
        url="http://127.0.0.1:1/v1",
        host="127.0.0.1",
        port=1,
        node=this_node(),
        model="tiny_char",
        model_id="/models/tiny_char",
        deployment={"engine": "vllm", "model": "/models/tiny_char", "max_model_len": 256},
        plan={"model": "tiny_char"},
        command=["python", "-m", "vllm.entrypoints.openai.api_server"],
        env={},
        log="/dev/null",
        uid=os.getuid(),
        user="me",
        started_at=time.time(),
        startup_timeout_s=300.0,
        status=Status.ready,
    )
    values.update(given)
    return ServiceEntry(**values)  # type: ignore[arg-type]


def test_an_entry_is_written_for_its_owner_only_and_keeps_its_key(tmp_path):
    """The registry file is mode 0600 and holds the API key unmasked (the one place it is
    kept); it reads back equal."""
    key = "sk-harness-" + "k" * 32
    path = entry_path(tmp_path, "tiny_char-abc123")
    write_entry(path, entry(api_key=key))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert key in path.read_text()
    back = read_entry(path)
    assert back.api_key == key and back.status == Status.ready
    assert back.to_dict() == entry(api_key=key, started_at=back.started_at).to_dict()
    assert key not in repr(back)  # the dataclass hides it


def test_a_broken_file_is_listed_with_why_and_never_used(tmp_path):
    write_entry(entry_path(tmp_path, "mine"), entry("mine"))
    (tmp_path / "services" / "broken.json").write_text("[1, 2]")
    registry = read_registry(tmp_path)
    assert [e.id for e in registry.entries.values()] == ["mine"]
    reasons = {p.name: why for p, why in registry.unreadable.items()}
    assert "no service entry" in reasons["broken.json"]
    assert read_registry(tmp_path / "nothing").entries == {}


@pytest.mark.skipif(os.getuid() != 0, reason="giving a file to another user needs root")
def test_another_users_file_is_listed_with_its_owner_and_never_used(tmp_path):
    theirs = entry_path(tmp_path, "theirs")
    write_entry(theirs, entry("theirs"))
    os.chown(theirs, 54321, -1)
    registry = read_registry(tmp_path)
    assert registry.entries == {}
    assert "belongs to user 54321" in registry.unreadable[theirs]


def test_liveness_is_the_pid_and_its_start_time(tmp_path):
    """A live process is alive; the same pid with another start time (a reused pid), a zombie
    and a reaped process are not."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        started = pid_start(child.pid)
        assert started is not None
        assert server_alive(entry(pid=child.pid, pid_start=started))
        assert not server_alive(entry(pid=child.pid, pid_start=started + 1))
        assert not server_alive(entry(pid=child.pid, pid_start=started, node="elsewhere"))
        child.kill()
        deadline = time.monotonic() + 10
        while pid_start(child.pid) is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert pid_start(child.pid) is None  # a zombie until reaped: not alive
    finally:
        child.kill()
        child.wait()
    assert pid_start(child.pid) is None


def test_mark_dead_records_why(tmp_path):
    path = entry_path(tmp_path, "gone")
    gone = entry("gone")
    write_entry(path, gone)
    mark_dead(path, gone, "its server (pid 1) ended")
    back = read_entry(path)
    assert back.status == Status.dead and back.reason == "its server (pid 1) ended"


GROUP = """
import subprocess, sys, time
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
subprocess.Popen([sys.executable, "-c", "import signal, time; "
                  "signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"])
time.sleep(600)
"""


def test_stop_ends_the_whole_group_even_a_process_that_ignores_sigterm(tmp_path):
    """A server's group (itself and what it started, one child deaf to SIGTERM) ends: SIGTERM,
    then SIGKILL after the grace; nothing is left."""
    leader = subprocess.Popen([sys.executable, "-c", GROUP], start_new_session=True)
    try:
        started = pid_start(leader.pid)
        assert started is not None
        deadline = time.monotonic() + 30
        while len(group_members(leader.pid, started)) < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        members = group_members(leader.pid, started)
        assert len(members) == 3
        ended = stop_server(entry(pid=leader.pid, pid_start=started), grace_s=2.0)
        assert ended == 3
        leader.wait(timeout=10)
        assert not [p for p in members if is_live(p)]
        assert group_members(leader.pid, started) == []
        assert stop_server(entry(pid=leader.pid, pid_start=started)) == 0  # nothing left
    finally:
        if leader.poll() is None:
            os.killpg(leader.pid, 9)
            leader.wait()


def test_stop_refuses_a_service_of_another_node(tmp_path):
    from harness.service.server import ServiceError

    with pytest.raises(ServiceError, match="runs on elsewhere, not here"):
        stop_server(entry(node="elsewhere", pid=os.getpid()))


def test_the_registry_folder_is_under_outputs_root(tmp_path):
    assert entry_path(tmp_path, "x") == Path(tmp_path).resolve() / "services" / "x.json"
