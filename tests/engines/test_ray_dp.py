"""Data-parallel replicas as Ray actors (``harness.engines.ray.replicas``).

- sharding: balanced by size, same-context requests together, answers back in order (no Ray);
- a stand-in engine on two replicas in this process: order kept over many requests, errors
  carried, a killed replica rebuilt, and nothing of Ray left after ``close()``;
- the harness CLI with the bundled model: two HF replicas, and two vLLM replicas (CPU build, each
  pinned to a core of its own), give the single HF engine's metrics on arith_mc and reverse_gen,
  build exactly two engines, and leave no Ray (or vLLM) process behind;
- refusals before loading: Ray missing (hidden in a subprocess), more replicas than CPUs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from harness.engines.base import EngineDied, EngineError, RemoteEngine
from harness.engines.ray.cluster import INSTALL_RAY
from harness.engines.ray.shards import cpu_shares, request_size, shard
from harness.paths import PROJECT_ROOT
from tests.conftest import assert_clean_failure, offline_env, run_harness
from tests.processes import Watcher, descendants, live, wait_until

RAY_PROCESS_WORDS = ("raylet", "gcs_server", "ray::", "ray/", "dashboard", "log_monitor")
DATASETS = ["arith_mc", "reverse_gen"]
LIMIT = 40


def is_ray(command: str) -> bool:
    return any(word in command for word in RAY_PROCESS_WORDS)


def ray_processes(pids: dict[int, str]) -> dict[int, str]:
    """Those of ``pids`` still alive that are Ray's (gcs_server, raylet, workers, agents)."""
    return {p: c for p, c in live(pids).items() if is_ray(c)}


class Req:
    def __init__(self, *args: Any) -> None:
        self.args = args


# ---------------------------------------------------------------- sharding (no Ray)


def test_shards_are_balanced_ordered_and_keep_contexts_together():
    reqs = [("q" * (i % 7 + 1), f" {c}") for i in range(30) for c in "abcd"]
    reqs += [("long" * 50, {"max_gen_toks": 5})]
    shards = shard(reqs, 3)
    flat = sorted(i for s in shards for i in s)
    assert flat == list(range(len(reqs)))  # every request exactly once
    assert all(s == sorted(s) for s in shards)  # original order within a shard
    for s in shards:  # a context's requests all on one replica
        others = [i for t in shards if t is not s for i in t]
        assert not {reqs[i][0] for i in s} & {reqs[i][0] for i in others}
    loads = [sum(request_size(reqs[i]) for i in s) for s in shards]
    assert max(loads) - min(loads) <= max(request_size(r) for r in reqs) * 4
    assert shard(reqs, 3) == shards  # deterministic
    assert shard([], 2) == [[], []]
    assert shard([("a",)], 3) == [[0], [], []]


def test_cpu_shares_are_equal_disjoint_and_refuse_too_many_replicas():
    assert cpu_shares([3, 0, 1, 2, 4], 2) == [[0, 1], [2, 3]]  # the odd one out stays unused
    assert cpu_shares([0, 1], 2) == [[0], [1]]
    with pytest.raises(ValueError, match=r"3 replicas need a CPU each .*data_parallel_size <= 2"):
        cpu_shares([0, 1], 3)


# ---------------------------------------------------------------- a stand-in engine, in process


def stub_plan(dp: int) -> Any:
    return SimpleNamespace(
        data_parallel_size=dp,
        device="cpu",
        tensor_parallel_size=1,
        pipeline_parallel_size=1,
        nodes_needed=1,
        engine="hf",
        memory=SimpleNamespace(weights_total_gb=0.0),
        stall_timeout_s=None,
        ray_address=None,
        ray_wait_timeout_s=60,
    )


@pytest.mark.ray
def test_replicas_answer_in_order_survive_a_death_and_leave_nothing(monkeypatch):
    from harness.engines.ray.replicas import RayDPEngine

    monkeypatch.setenv("PYTHONPATH", str(PROJECT_ROOT))  # the actors import tests.fake_engine
    watcher = Watcher(os.getpid())
    engine = RayDPEngine(stub_plan(2), "tests.fake_engine:FakeEngine", False, args=(0,))
    try:
        assert isinstance(engine, RemoteEngine)
        facts = engine.describe()
        assert facts["kind"] == "fake" and facts["builds"] == 2
        assert len({r["pid"] for r in facts["replicas"]}) == 2
        gen = [Req("x" * (i % 13 + 1) + str(i), {"until": ["\n"]}) for i in range(200)]
        assert engine.lm.generate_until(gen) == [r.args[0][::-1] for r in gen]
        ll = [Req(f"ctx{i % 9}", "c" * (i % 5 + 1)) for i in range(90)]
        assert engine.lm.loglikelihood(ll) == [
            (-float(len(r.args[1])), len(r.args[0]) % 2 == 0) for r in ll
        ]
        assert engine.lm.loglikelihood_rolling([Req("hello")]) == [-5.0]
        answered = engine.answer("generate_until", gen)  # each replica counts its shard's
        assert answered.answers == [r.args[0][::-1] for r in gen]
        lengths = [len(r.args[0]) for r in gen]  # the stand-in's tokens are characters
        assert answered.prompt_tokens == lengths and answered.generated_tokens == lengths
        scored = engine.answer("loglikelihood", ll)
        assert scored.prompt_tokens == [len(r.args[0]) + len(r.args[1]) for r in ll]
        assert engine.lm.tokenizer_name == "fake-tokenizer"
        with pytest.raises(EngineError, match="asked to raise"):
            engine.lm.generate_until([Req("raise", {})])
        assert engine.revive() is False and engine.builds == 2  # healthy: nothing rebuilt
        os.kill(facts["replicas"][1]["pid"], signal.SIGKILL)
        assert wait_until(lambda: not live([facts["replicas"][1]["pid"]]), 10)
        with pytest.raises(EngineDied):
            engine.lm.generate_until(gen)
        with pytest.raises(EngineDied):
            engine.revive(rebuild=False)
        assert engine.revive() is True and engine.builds == 3  # the dead replica, once
        assert engine.lm.generate_until(gen) == [r.args[0][::-1] for r in gen]
        from harness.engines.base import StallWatch

        engine.stall = StallWatch(5)  # one replica stalls: the watchdog ends them all
        with pytest.raises(EngineDied, match="answered nothing for 5s"):
            engine.answer("generate_until", [Req("hang", {}), *gen])
        assert engine.revive() is True and engine.builds == 5
        assert engine.answer("generate_until", gen).answers == [r.args[0][::-1] for r in gen]
    finally:
        engine.close()
    seen = watcher.stop()
    assert any(map(is_ray, seen.values())), "no Ray process seen: the check would be void"
    assert wait_until(lambda: ray_processes(seen) == {}, 20), ray_processes(seen)
    assert ray_processes(descendants(os.getpid())) == {}
    import ray

    assert not ray.is_initialized()


# ---------------------------------------------------------------- the harness CLI


def cli_run(
    strategy_args: list[str], root: Path, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """One ``python -m harness`` run (``env``: variables added to a fresh machine's); its summary,
    wall time, and Ray processes left after it."""
    root.mkdir(parents=True, exist_ok=True)
    args = [
        *strategy_args,
        f"dataset=[{','.join(DATASETS)}]",
        *(f"dataset.{d}.limit={LIMIT}" for d in DATASETS),
        "tracking=none",
        "seed=1234",
        f"outputs_root={root / 'outputs'}",
        f"output_dir={root / 'run'}",
    ]
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness", *args],
        cwd=root,
        env={**offline_env(root), **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    watcher = Watcher(proc.pid)
    try:
        out, _ = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    seen = watcher.stop()
    assert proc.returncode == 0, out[-4000:]
    wait_until(lambda: ray_processes(seen) == {}, 20)
    return {
        "summary": json.loads((root / "run" / "summary.json").read_text()),
        "wall_s": time.perf_counter() - started,
        "seen": seen,
        "ray_left": ray_processes(seen),
        "out": out,
    }


def assert_quiet_console(run: dict[str, Any], root: Path, most: int) -> None:
    """A Ray run's console as quiet as an engine process's: no replica output and no Ray INFO
    line on it (at most ``most`` lines), the replicas' output in harness.log instead."""
    lines = [line for line in run["out"].splitlines() if "note: OMP_NUM_THREADS=" not in line]
    text = "\n".join(lines)
    for chatter in ("Loading", "it/s", "INFO", "Started a local Ray instance", "pid="):
        assert chatter not in text, f"{chatter!r} on the console:\n{text}"
    assert len(lines) <= most, text
    log = (root / "run" / "harness.log").read_text()
    assert "[harness.engine.output][INFO] [Replica pid=" in log, log[-3000:]
    assert "Started a local Ray instance" in log, log[-3000:]


def metrics(summary: dict[str, Any]) -> dict[str, dict[str, float]]:
    return {name: d["metrics"] for name, d in summary["datasets"].items()}


def describe_times(name: str, run: dict[str, Any]) -> str:
    s = run["summary"]
    times = {d: s["datasets"][d]["eval_time_s"] for d in DATASETS}
    return f"{name}: load {s['load_time_s']:.1f}s, per dataset {times}, wall {run['wall_s']:.0f}s"


@pytest.fixture(scope="module")
def single_run(tmp_path_factory) -> dict[str, Any]:
    return cli_run(["strategy=single"], tmp_path_factory.mktemp("single"))


@pytest.mark.ray
@pytest.mark.slow
def test_two_hf_replicas_equal_the_single_engine(tmp_path, single_run):
    dp = cli_run(["strategy=dp", "strategy.engine=hf"], tmp_path / "dp")
    assert_quiet_console(dp, tmp_path / "dp", 13)
    engine = dp["summary"]["engine"]
    assert engine["data_parallel"] == "ray" and engine["data_parallel_size"] == 2
    assert engine["builds"] == 2, "one build per replica, none per dataset"
    assert len({r["pid"] for r in engine["replicas"]}) == 2
    assert dp["summary"]["failed"] == []
    assert metrics(dp["summary"]) == metrics(single_run["summary"])
    for name in DATASETS:  # both replicas served: every request answered, none lost
        assert (
            dp["summary"]["datasets"][name]["requests"]
            == (single_run["summary"]["datasets"][name]["requests"])
        )
    assert any(map(is_ray, dp["seen"].values())), "no Ray process seen: the check is void"
    assert dp["ray_left"] == {}, dp["ray_left"]
    print(f"metrics (single = 2 replicas): {metrics(dp['summary'])}")
    print(describe_times("single", single_run))
    print(describe_times("dp=2", dp))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("backend", "process"),
    [("process", "own"), pytest.param("ray", "ray", marks=pytest.mark.ray)],
)
def test_the_hf_engine_in_a_process_or_a_ray_actor_of_its_own(
    tmp_path, single_run, backend, process
):
    """``strategy.replica_backend`` places the HF engine: ``process`` a child process, ``ray``
    one Ray replica (data_parallel_size 1); the metrics stay the in-process engine's."""
    run = cli_run(["strategy=single", f"strategy.replica_backend={backend}"], tmp_path / backend)
    engine = run["summary"]["engine"]
    assert engine["kind"] == "hf" and engine["builds"] == 1
    if process == "own":
        assert engine["process"] == "own" and engine["pid"] != os.getpid()
        assert engine["pid"] in run["seen"]  # a child of the harness process
    else:
        assert engine["data_parallel"] == "ray" and engine["data_parallel_size"] == 1
        assert run["ray_left"] == {}, run["ray_left"]
    assert metrics(run["summary"]) == metrics(single_run["summary"])
    assert wait_until(lambda: live(run["seen"]) == {}, 30), live(run["seen"])


@pytest.mark.ray
@pytest.mark.vllm
@pytest.mark.slow
@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="two replicas need two CPUs")
def test_two_vllm_replicas_equal_the_single_engine(tmp_path, single_run):
    """``strategy=dp`` (engine vllm): two resident vLLM engines (CPU build), one per Ray actor,
    each pinned to its own share of the CPUs."""
    dp = cli_run(["strategy=dp"], tmp_path / "dp_vllm")
    # vLLM's start-up log in harness.log (a loaded box may add "closing replicas: ...")
    assert_quiet_console(dp, tmp_path / "dp_vllm", 16)
    log = (tmp_path / "dp_vllm" / "run" / "harness.log").read_text()
    assert "[Replica pid=" in log and "(EngineCore pid=" in log, log[-3000:]
    engine = dp["summary"]["engine"]
    assert engine["kind"] == "vllm" and engine["data_parallel_size"] == 2
    assert engine["builds"] == 2, "one build per replica, none per dataset"
    # counted from the process table too: one vLLM EngineCore per replica, no more
    engine_cores = {p for p, c in dp["seen"].items() if "EngineCore" in c}
    assert len(engine_cores) == 2, dp["seen"]
    shares = cpu_shares(sorted(os.sched_getaffinity(0)), 2)
    replicas = engine["replicas"]
    assert [r["cpus"] for r in replicas] == shares  # each replica on CPUs of its own
    binds = [r["env"]["VLLM_CPU_OMP_THREADS_BIND"] for r in replicas]
    assert len(set(binds)) == 2, binds  # not both on vLLM's "auto" first core
    assert dp["summary"]["failed"] == []
    assert metrics(dp["summary"]) == metrics(single_run["summary"])
    for name in DATASETS:
        assert (
            dp["summary"]["datasets"][name]["requests"]
            == single_run["summary"]["datasets"][name]["requests"]
        )
    assert dp["ray_left"] == {}, dp["ray_left"]
    assert wait_until(lambda: live(dp["seen"]) == {}, 30), live(dp["seen"])
    print(describe_times("dp=2 vllm", dp))


HIDE_RAY = """
import sys
sys.modules["ray"] = None  # importlib.util.find_spec("ray") is None: as if not installed
sys.argv = ["harness", *sys.argv[1:]]
from harness.app import main
main()
"""


def test_dp_without_ray_names_the_install_command(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-c", HIDE_RAY, "strategy=dp", "strategy.engine=hf", "tracking=none"],
        cwd=tmp_path,
        env=offline_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert_clean_failure(proc, "Ray is not installed", INSTALL_RAY, "data_parallel_size=1")


@pytest.mark.ray
def test_more_replicas_than_cpus_is_refused(tmp_path):
    cpus = len(os.sched_getaffinity(0))
    proc = run_harness(
        [
            "strategy=dp",
            "strategy.engine=hf",
            f"strategy.data_parallel_size={cpus + 1}",
            "tracking=none",
        ],
        tmp_path,
        timeout=120,
    )
    assert_clean_failure(
        proc,
        f"{cpus + 1} replica(s) x 1 CPU rank(s) need {cpus + 1} CPU(s)",
        f"may use {cpus}",
        f"strategy.data_parallel_size <= {cpus}",
        "ray.address=",
    )
