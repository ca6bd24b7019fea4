"""Which service a run attaches to, without a server: the deployment key of a plan, services of
another deployment, user, status or a server gone are never attached to (and say why)."""

from __future__ import annotations

import json
import os
import time

import pytest

from harness.planning.plan import Plan
from harness.planning.preflight import checked_plan
from harness.service.attach import deployment_key, differences, find_service
from harness.service.registry import Status, entry_path, read_entry, write_entry
from harness.service.server import as_flags, server_command, startup_budget_s
from harness.service.start import composed
from tests.service.test_registry import entry


def plan_of(*overrides: str) -> Plan:
    return checked_plan(composed(["model=tiny_char", "strategy=vllm", *overrides]))


@pytest.fixture(scope="module")
def served() -> Plan:
    return plan_of()


def test_the_server_gets_the_deployment_the_in_process_engine_would(served):
    """The command line carries the plan's dtype, tp/pp, max_model_len, eager mode and the CPU
    build's KV cache, as ``engine_kwargs`` gives them to the in-process engine."""
    command = server_command(served, "127.0.0.1", 8123)
    assert command[1:3] == ["-m", "vllm.entrypoints.openai.api_server"]
    text = " ".join(command)
    assert f"--model {deployment_key(served)['model']}" in text
    for flag in (
        "--host 127.0.0.1",
        "--port 8123",
        "--dtype float32",
        "--tensor-parallel-size 1",
        "--max-model-len 256",
        "--enforce-eager",
        "--kv-cache-memory-bytes 268435456",
    ):
        assert flag in text
    assert "api-key" not in text  # a key goes by the environment, never the command line


def test_engine_args_and_seed_become_flags():
    plan = plan_of("seed=7", "+strategy.engine_args={max_num_seqs:8,enable_prefix_caching:false}")
    text = " ".join(server_command(plan, "127.0.0.1", 1))
    assert "--seed 7" in text and "--max-num-seqs 8" in text
    assert "--no-enable-prefix-caching" in text
    assert deployment_key(plan)["max_num_seqs"] == 8


def test_flags_of_each_kind():
    assert as_flags({"a_b": True, "c": False, "d": None, "e": {"x": 1}, "f": [1, 2], "g": 3}) == [
        "--a-b",
        "--no-c",
        "--e",
        '{"x": 1}',
        "--f",
        "1",
        "2",
        "--g",
        "3",
    ]


def test_the_start_up_budget_grows_with_the_model(served):
    assert startup_budget_s(served) == pytest.approx(300.0, abs=1)
    big = plan_of("model=llama3_1_70b", "tier=large", "strategy=tp4")
    assert startup_budget_s(big) > 1500


def test_equal_plans_match_and_any_deployment_change_does_not(served):
    """The same command plans the same key; max_model_len, dtype, seed, engine_args, the model
    or the engine each change it."""
    assert deployment_key(plan_of()) == deployment_key(served)
    others = [
        plan_of("strategy.max_model_len=128"),
        plan_of("strategy.dtype=bfloat16"),
        plan_of("seed=1"),
        plan_of("+strategy.engine_args={max_num_seqs:4}"),
        plan_of("model=tiny_char_chat"),
        plan_of("strategy=single"),
    ]
    for other in others:
        assert deployment_key(other) != deployment_key(served)
    said = differences(deployment_key(served), deployment_key(others[0]))
    assert said == ["max_model_len 256 != 128"]


def register(tmp_path, plan: Plan, service_id: str = "svc", **given: object) -> None:
    """A ready service of ``plan`` whose server is this test process (alive, not a server)."""
    from harness.service.registry import pid_start

    values: dict[str, object] = dict(
        deployment=deployment_key(plan), pid=os.getpid(), pid_start=pid_start(os.getpid())
    )
    values.update(given)
    write_entry(entry_path(tmp_path, service_id), entry(service_id, **values))


def test_no_registry_no_service(served, tmp_path):
    assert find_service(served, tmp_path) is None


def test_another_deployment_is_never_attached_and_the_run_says_why(served, tmp_path, capsys):
    register(tmp_path, plan_of("strategy.max_model_len=128"))
    assert find_service(served, tmp_path) is None
    assert "serves tiny_char with another deployment (max_model_len 128 != 256)" in (
        capsys.readouterr().out
    )


def test_another_engine_never_looks(tmp_path):
    hf = plan_of("strategy=single")
    register(tmp_path, hf)  # even an entry with its key: a service is vLLM's server
    assert find_service(hf, tmp_path) is None


def test_another_users_service_is_refused(served, tmp_path, capsys):
    register(tmp_path, served, uid=os.getuid() + 1, user="someone")
    assert find_service(served, tmp_path) is None
    assert "belongs to user someone" in capsys.readouterr().out


@pytest.mark.parametrize("status", [Status.starting, Status.dead])
def test_a_service_not_ready_is_not_attached(served, tmp_path, status, capsys):
    register(tmp_path, served, status=status, reason="why not")
    assert find_service(served, tmp_path) is None
    assert f"it is {status.value}" in capsys.readouterr().out


def test_a_service_whose_server_is_gone_is_marked_dead(served, tmp_path, capsys):
    register(tmp_path, served, pid_start=1)  # this pid, another start: a reused pid
    assert find_service(served, tmp_path) is None
    assert "is gone: marked dead" in capsys.readouterr().out
    back = read_entry(entry_path(tmp_path, "svc"))
    assert back.status == Status.dead and "ended" in back.reason


def test_a_live_process_that_does_not_answer_is_marked_dead(served, tmp_path, capsys):
    """The health check, not the pid alone: a process that gives no completion (here nothing
    listens on the port) is not attached to."""
    register(tmp_path, served, url="http://127.0.0.1:9/v1")
    started = time.monotonic()
    assert find_service(served, tmp_path) is None
    assert time.monotonic() - started < 30
    assert "fails its health check" in capsys.readouterr().out
    assert read_entry(entry_path(tmp_path, "svc")).status == Status.dead


def test_a_stopped_service_is_not_restarted(tmp_path):
    """A run whose service was stopped under it (``--stop``) does not bring it back."""
    from harness.service.attach import restart_service
    from harness.service.server import ServiceError

    (tmp_path / "services").mkdir()
    with pytest.raises(ServiceError, match="svc was stopped"):
        restart_service(entry_path(tmp_path, "svc"), known_pid=1)


def test_a_service_of_another_node_is_left_alone(served, tmp_path, capsys):
    """A registry on a shared file system: a service of another node is neither attached to
    nor marked dead (its pid means nothing here)."""
    register(tmp_path, served, node="elsewhere")
    assert find_service(served, tmp_path) is None
    assert "it runs on elsewhere" in capsys.readouterr().out
    assert read_entry(entry_path(tmp_path, "svc")).status == Status.ready


def test_a_key_is_generated_off_loopback_in_a_shape_masked_everywhere(served, tmp_path):
    """Off loopback the entry gets a fresh key that ``mask`` hides by its shape alone (in any
    process, whatever its environment); the URL runs use is loopback for the wildcard."""
    from harness.secrets import mask
    from harness.service.options import ServiceConfig
    from harness.service.start import new_entry

    run = composed(["model=tiny_char", "strategy=vllm", f"outputs_root={tmp_path}"])
    keyed = new_entry(served, run, ServiceConfig(host="0.0.0.0", port=8123))
    assert keyed.api_key and keyed.api_key.startswith("sk-harness-")
    assert mask(f"Bearer {keyed.api_key}", secrets=[]) == "Bearer ***"
    assert keyed.url == "http://127.0.0.1:8123/v1" and keyed.host == "0.0.0.0"
    assert keyed.api_key not in " ".join(keyed.command) + json.dumps(keyed.env)
    other = new_entry(served, run, ServiceConfig(host="0.0.0.0", port=8123))
    assert other.api_key != keyed.api_key and other.id != keyed.id
    assert new_entry(served, run, ServiceConfig()).api_key is None  # loopback: none by default
