"""Races of the registry, with real serve commands and a real (fake, slow) server process
(tests/service/fake_server.py) in place of vLLM's: two serve commands of one deployment at the
same instant start one server, the second reuses it; a serve command SIGKILLed while it waits
leaves no server behind once ``--list`` (or the next serve command) looks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from harness.paths import PROJECT_ROOT
from harness.service.registry import Status, read_entry, read_registry
from harness.service.server import group_members, stop_server
from tests.conftest import offline_env, run_module
from tests.processes import live, wait_until
from tests.service.fake_server import STARTED

DRIVER = """
import sys
import harness.service.server as server
server.SERVER_MODULE = "tests.service.fake_server"  # a real process, slow to start
from harness.service.cli import main
sys.exit(main(sys.argv[1:]))
"""
SERVE = ("model=tiny_char", "strategy=vllm", "service.startup_timeout_s=120")


def serve_fake(root: Path, delay_s: float, *args: str) -> subprocess.Popen[str]:
    """``python -m harness.serve`` with the fake server, as its own process."""
    env = offline_env(root)
    env["PYTHONPATH"] = os.pathsep.join([str(PROJECT_ROOT), env.get("PYTHONPATH", "")])
    env["FAKE_SERVER_DELAY_S"] = str(delay_s)
    return subprocess.Popen(
        [sys.executable, "-c", DRIVER, *SERVE, f"outputs_root={root / 'outputs'}", *args],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def starts(root: Path) -> int:
    logs = (root / "outputs" / "services").glob("*.log")
    return sum(log.read_text(errors="replace").count(STARTED) for log in logs)


def test_two_serve_commands_at_once_start_one_server_and_both_use_it(tmp_path):
    """Both commands plan, then race for the registry; the server takes 6 s to listen, longer
    than the two commands' start-up differs: without the claim each would start its own."""
    first, second = serve_fake(tmp_path, 6.0), serve_fake(tmp_path, 6.0)
    outs = [proc.communicate(timeout=300)[0] for proc in (first, second)]
    try:
        assert [first.returncode, second.returncode] == [0, 0], "\n".join(outs)
        entry, *others = read_registry(tmp_path / "outputs").entries.values()
        assert not others, [e.id for e in read_registry(tmp_path / "outputs").entries.values()]
        assert entry.status == Status.ready and starts(tmp_path) == 1
        waited = [out for out in outs if "is being started by another serve command" in out]
        assert len(waited) == 1, outs
        assert f"service {entry.id} serves this model and deployment" in waited[0]
    finally:
        run_module("harness.serve", "--stop", "all", f"outputs_root={tmp_path / 'outputs'}",
                   cwd=tmp_path, timeout=120)  # fmt: skip


def test_a_serve_command_killed_while_waiting_leaves_nothing_once_listed(tmp_path):
    """SIGKILL of the serve command while its server loads: its ``starting`` entry names it;
    ``--list`` finds it gone, kills the server's process group (the server and its child) and
    shows the entry dead; the next serve command starts a new one."""
    proc = serve_fake(tmp_path, 600.0)
    try:
        folder = tmp_path / "outputs" / "services"

        def started() -> bool:
            entries = list(read_registry(tmp_path / "outputs").entries.values())
            return bool(entries) and entries[0].pid > 0 and starts(tmp_path) == 1

        assert wait_until(started, 120), proc.stdout and proc.stdout.read()
        (path, entry), *_ = read_registry(tmp_path / "outputs").entries.items()
        assert entry.status == Status.starting and entry.starter_pid == proc.pid
        assert wait_until(lambda: len(group_members(entry.pid, entry.pid_start)) >= 2, 30)
        members = group_members(entry.pid, entry.pid_start)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        time.sleep(0.5)
        assert live(members), "the server outlives its serve command until someone looks"
        listed = run_module("harness.serve", "--list", f"outputs_root={tmp_path / 'outputs'}",
                            cwd=tmp_path, timeout=120)  # fmt: skip
        assert listed.returncode == 0, listed.stdout + listed.stderr
        assert f"its serve command (pid {proc.pid}) ended before it was ready" in listed.stdout
        assert wait_until(lambda: live(members) == {}, 30), live(members)
        dead = read_entry(path)
        assert dead.status == Status.dead and "ended before it was ready" in dead.reason
        assert sorted(p.name for p in folder.glob("*.json")) == [path.name]
    finally:
        if proc.poll() is None:
            proc.kill()
        run_module("harness.serve", "--stop", "all", f"outputs_root={tmp_path / 'outputs'}",
                   cwd=tmp_path, timeout=120)  # fmt: skip


def orphan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, delay_s: float) -> tuple[Path, Any]:
    """A ``starting`` entry whose serve command has ended, its (fake) server started: what a
    serve command SIGKILLed while it waits leaves."""
    import harness.service.server as server
    from harness.planning.preflight import checked_plan
    from harness.service.options import ServiceConfig
    from harness.service.registry import entry_path, this_node, write_entry
    from harness.service.start import composed, new_entry

    monkeypatch.setattr(server, "SERVER_MODULE", "tests.service.fake_server")
    monkeypatch.setenv("FAKE_SERVER_DELAY_S", str(delay_s))
    monkeypatch.setenv("PYTHONPATH", str(PROJECT_ROOT))
    run = composed([*SERVE[:2], f"outputs_root={tmp_path}"])
    entry = new_entry(checked_plan(run), run, ServiceConfig())
    gone = subprocess.Popen(["true"])
    gone.wait()
    entry.starter_pid, entry.starter_start, entry.starter_node = gone.pid, 1, this_node()
    path = entry_path(tmp_path, entry.id)
    server.start_server(entry)
    write_entry(path, entry)
    return path, entry


def test_a_starting_service_whose_command_is_gone_but_whose_server_is_up_is_adopted(
    tmp_path, monkeypatch
):
    """The serve command died between its server's ready and its last write: the server is up
    and healthy, so the entry is registered ready instead of killed."""
    from harness.service.claim import reap_orphan

    path, entry = orphan(tmp_path, monkeypatch, 0.0)
    try:
        assert wait_until(lambda: _answers(entry.url), 60)
        assert not reap_orphan(path, entry)
        assert read_entry(path).status == Status.ready
        assert live([entry.pid]), "adopted, not killed"
    finally:
        stop_server(entry, grace_s=5)


def test_the_next_serve_command_ends_an_orphaned_service_and_starts_its_own(tmp_path, monkeypatch):
    """The next serve command's claim, under the registry's lock, finds the orphan: its server
    (and the server's child) killed, its entry dead; it claims a new entry of its own."""
    from harness.service.claim import claim
    from harness.service.options import ServiceConfig

    path, entry = orphan(tmp_path, monkeypatch, 600.0)
    try:
        assert wait_until(lambda: len(group_members(entry.pid, entry.pid_start)) >= 2, 30)
        members = group_members(entry.pid, entry.pid_start)
        fresh = replace(entry, id="tiny_char-fresh1", starter_pid=0)
        got = claim(tmp_path, entry.deployment, ServiceConfig(), "local", lambda: None,
                    lambda: fresh)  # fmt: skip
        assert not got.reused and got.entry.id == "tiny_char-fresh1"
        assert wait_until(lambda: live(members) == {}, 30), live(members)
        dead = read_entry(path)
        assert dead.status == Status.dead and "ended before it was ready" in dead.reason
    finally:
        stop_server(entry, grace_s=5)


def _answers(url: str) -> bool:
    from harness.service.probe import NotAnswering, served_models

    try:
        return bool(served_models(url, None))
    except NotAnswering:
        return False
