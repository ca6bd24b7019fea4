"""The serve command without a server: its words, its help, and bad input refused with exit 2
before anything starts."""

from __future__ import annotations

import pytest

from harness.errors import ConfigError
from harness.service.options import Action, ServiceConfig, needs_key, parse
from tests.conftest import assert_clean_failure, run_module


def test_words_are_taken_apart():
    args = parse(["model=tiny_char", "strategy=vllm", "service.host=0.0.0.0", "service.port=9"])
    assert args.action == Action.start
    assert args.overrides == ["model=tiny_char", "strategy=vllm"]
    assert args.service == ServiceConfig(host="0.0.0.0", port=9)
    assert parse(["--list", "outputs_root=/x"]).action == Action.list
    stop = parse(["--stop", "tiny_char-abc123"])
    assert (stop.action, stop.stop) == (Action.stop, "tiny_char-abc123")
    assert parse(["--stop=all"]).stop == "all"
    assert parse(["-h"]).action == Action.help


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--stop"], "--stop needs a service id"),
        (["--frobnicate"], "--frobnicate: not a flag of harness.serve"),
        (["service.port=abc"], "service.port=abc"),
        (["service.prot=1"], "service.prot=1"),
        (["service.port=70000"], "not a port"),
        (["service.host=0.0.0.0", "service.api_key=false"], "requires an API key"),
    ],
)
def test_bad_words_are_refused_with_the_fix(argv, needle):
    with pytest.raises(ConfigError) as err:
        parse(argv)
    assert needle in str(err.value) and "Fix" in str(err.value)


def test_a_key_is_required_off_loopback():
    assert not needs_key(ServiceConfig())
    assert not needs_key(ServiceConfig(host="localhost"))
    assert needs_key(ServiceConfig(host="0.0.0.0"))
    assert needs_key(ServiceConfig(host="10.1.2.3"))
    assert needs_key(ServiceConfig(api_key=True))


def test_help_list_and_stop_without_services(tmp_path):
    shown = run_module("harness.serve", "--help", cwd=tmp_path, timeout=60)
    assert shown.returncode == 0
    assert "--stop ID|all" in shown.stdout and "service.host" in shown.stdout
    assert "hydra/launcher=slurm" in shown.stdout and "scancel" in shown.stdout
    listed = run_module("harness.serve", "--list", cwd=tmp_path, timeout=60)
    assert listed.returncode == 0 and "no services under" in listed.stdout
    stopped = run_module("harness.serve", "--stop", "nothing-123", cwd=tmp_path, timeout=60)
    assert stopped.returncode == 2
    assert_clean_failure(stopped, "--stop nothing-123: no such service of yours")


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["strategy=single"], "a service is vLLM's OpenAI server. Fix: a vLLM strategy"),
        (["model=nope"], "model=nope: no such option"),
        (["strategy=vllm", "strategy.max_model_len=100000"], "max_model_len"),
        (["strategy=vllm", "strategy.tensor_parallel_size=x"], "does not compose"),
        (["strategy=vllm", "hydra/launcher=submitit_local"], "Fix: hydra/launcher=slurm"),
    ],
)
def test_bad_input_exits_2_before_anything_starts(tmp_path, argv, needle):
    proc = run_module("harness.serve", "model=tiny_char", *argv, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert_clean_failure(proc, needle)
    assert not (tmp_path / "outputs" / "services").exists() or not list(
        (tmp_path / "outputs" / "services").iterdir()
    )
