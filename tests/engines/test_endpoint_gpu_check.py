"""The GPU check's served step (benchmarks/gpu_check_served.py), the parts that need no GPU: the
server it starts is the one ``python -m harness.serve`` derives from the in-process run's plan,
and a node without vLLM records the step as skipped, never as passed. Its whole run on the CPU
build of vLLM is the dry run's (``bash benchmarks/gpu_check.sh --dry-run --only served``)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from harness.paths import PROJECT_ROOT

BENCH = PROJECT_ROOT / "benchmarks"


@pytest.fixture
def served(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    import gpu_check_served

    return gpu_check_served


def context(served, tmp_path: Path, python: str = sys.executable):
    from gpu_check_steps import Context

    deadline = time.time() + 300
    return Context(True, tmp_path, tmp_path, tmp_path, deadline, False, python=python)


def test_the_step_starts_the_server_harness_serve_would_start(served, tmp_path):
    planned = served.server_plan(context(served, tmp_path), 8123)
    command = planned["command"]
    assert command[1:3] == ["-m", "vllm.entrypoints.openai.api_server"]
    flags = dict(zip(command[3::2], command[4::2], strict=False))
    assert Path(flags["--model"]) == PROJECT_ROOT / "plugins" / "models" / "tiny_char"
    assert (flags["--host"], flags["--port"]) == ("127.0.0.1", "8123")
    assert "--seed" in command and command[command.index("--seed") + 1] == "1234"
    assert planned["device"] == "cpu"  # the dry run: the CPU build


def test_a_node_without_vllm_skips_the_step_and_says_why(served, tmp_path):
    from gpu_check_steps import blocker, run_step

    ctx = context(served, tmp_path)
    node = tmp_path / "node_python"  # this Python with vLLM hidden, as the node lacks it
    node.write_text(
        f'#!/bin/sh\nPYTHONPATH="{blocker(ctx)}:$PYTHONPATH" exec {sys.executable} "$@"\n'
    )
    node.chmod(0o755)
    ctx.python = str(node)
    record = run_step(ctx, "served", served.step_served)
    assert record["status"] == "skipped"
    assert "vLLM is not installed on this node" in record["summary"]
