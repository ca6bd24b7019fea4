"""A real vLLM OpenAI-compatible server (vLLM's CPU build) serving the bundled model on
127.0.0.1, started once per test session for every test that asks for it (``vllm_server``; a
test using it is marked ``vllm``, whose rule in ``tests/real_parts.py`` says what a missing vLLM
does), and stopped at its end leaving no process behind.

Starting it costs about 60 s on two cores, so the tests that need a server share this one; each
puts what it needs in front of it (``tests/endpoint_proxy.py``) rather than starting another.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.paths import PLUGINS_DIR
from tests.conftest import offline_env
from tests.processes import group_members, wait_until

MODEL = PLUGINS_DIR / "models" / "tiny_char"
CHAT_MODEL = PLUGINS_DIR / "models" / "tiny_char_chat"
"""tiny_char's weights and tokenizer with a chat template: the server's chat API uses it."""
MAX_MODEL_LEN = 256
READY_TIMEOUT_S = 300.0
"""Longest wait for the server to answer /v1/models (about 60 s measured on two cores)."""


@dataclass(frozen=True)
class VLLMServer:
    """A running vLLM OpenAI server: where it listens, what it serves, its process group."""

    root: str
    """``http://127.0.0.1:PORT`` (vLLM's own routes: /health, /tokenize, /version)."""
    model_id: str
    """The id it serves the bundled model under (its ``--model`` path)."""
    pgid: int
    """Its process group (the server leads it; its EngineCore joins it)."""
    log: Path
    """Its output."""

    @property
    def base_url(self) -> str:
        """The OpenAI API root (``strategy.base_url``)."""
        return f"{self.root}/v1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            return bool(json.loads(reply.read()).get("data"))
    except OSError:
        return False


def start_vllm_server(log: Path, port: int | None = None) -> tuple[subprocess.Popen[bytes], str]:
    """Start vLLM's OpenAI server on the bundled model (with tiny_char_chat's chat template, so
    that its chat API answers too), its own process group, output to ``log`` (never a pipe:
    nobody reads it while the tests run)."""
    port = port or free_port()
    env = offline_env(log.parent) | {"VLLM_CPU_KVCACHE_SPACE": "1"}
    template = log.parent / "chat_template.jinja"  # tiny_char_chat's: its chat API answers
    config = json.loads((CHAT_MODEL / "tokenizer_config.json").read_text())
    template.write_text(config["chat_template"])
    command = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        *("--model", str(MODEL), "--dtype", "float32", "--max-model-len", str(MAX_MODEL_LEN)),
        *("--enforce-eager", "--seed", "0", "--host", "127.0.0.1", "--port", str(port)),
        *("--chat-template", str(template)),
    ]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    return proc, f"http://127.0.0.1:{port}"


def wait_ready(proc: subprocess.Popen[bytes], root: str, log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text()[-3000:]
            raise RuntimeError(f"vLLM's server exited ({proc.returncode}):\n{tail}")
        if _answers(f"{root}/v1/models"):
            return
        time.sleep(1)
    tail = log.read_text()[-3000:]
    raise RuntimeError(f"vLLM's server was not ready in {READY_TIMEOUT_S:.0f}s:\n{tail}")


def stop_group(pgid: int) -> list[int]:
    """SIGTERM the server's group (the EngineCore goes down with it), SIGKILL what is left after
    30 s; the pids still alive after that (none, normally)."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return []
    if not wait_until(lambda: not group_members(pgid), 30):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        wait_until(lambda: not group_members(pgid), 10)
    return group_members(pgid)


REUSE = "HARNESS_TEST_VLLM_SERVER"
"""A server already running for the bundled model (``http://127.0.0.1:PORT``, started as
``start_vllm_server`` starts it), used instead of starting one: a developer's loop."""


@pytest.fixture(scope="session")
def vllm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VLLMServer]:
    log = tmp_path_factory.mktemp("vllm_server") / "server.log"
    if os.environ.get(REUSE):
        root = os.environ[REUSE].rstrip("/")
        assert _answers(f"{root}/v1/models"), f"{REUSE}={root}: no server answers there"
        yield VLLMServer(root, str(MODEL), 0, log)
        return
    proc, root = start_vllm_server(log)
    try:
        wait_ready(proc, root, log)
        yield VLLMServer(root, str(MODEL), proc.pid, log)
    finally:
        left = stop_group(proc.pid)
        proc.wait(10)
    assert left == [], f"vLLM's server left processes behind: {left}"
