"""GPU telemetry of a run on an endpoint (``strategy=endpoint``): a server on this node is watched
like an engine, on the GPUs its process sees (its ``CUDA_VISIBLE_DEVICES``, found through the
process listening on the URL's port), and a server elsewhere is not watched at all; the record
says which. The node's GPUs are the fake NVML's (tests/fake_nvml); the server is a real HTTP
server on 127.0.0.1 in a process of its own.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.config.schema import to_run_config
from harness.engines.remote.place import listener_pid, place_of
from harness.planning.preflight import checked_plan
from harness.telemetry.session import Telemetry
from tests.engines.conftest import free_port
from tests.processes import wait_until
from tests.telemetry.test_telemetry import NODE


@pytest.fixture
def server() -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """A real HTTP server on 127.0.0.1 that sees GPUs 2 and GPU-fake-0 (by its UUID)."""
    port = free_port()
    env = os.environ | {"CUDA_VISIBLE_DEVICES": "2,GPU-fake-0"}
    command = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_until(lambda: listener_pid(port) is not None, 30)
        yield port, proc
    finally:
        proc.terminate()
        proc.wait(10)


def telemetry_of(compose_cfg, base_url: str, tmp_path: Path) -> tuple[Telemetry, dict]:
    """Telemetry started for a ``strategy=endpoint`` plan, through a load, and recorded."""
    given = ["strategy=endpoint", f"strategy.base_url={base_url}", "telemetry.interval_s=0.05"]
    run = to_run_config(compose_cfg(*given))
    telemetry = Telemetry.start(run.telemetry, checked_plan(run))
    telemetry.on_event("load_started", {})
    telemetry.on_event("loaded", {})
    return telemetry, telemetry.record(tmp_path, []) or {}


def test_a_server_on_this_node_is_watched_on_its_own_gpus(fake_nvml, server, compose_cfg, tmp_path):
    fake_nvml(NODE)
    port, proc = server
    place = place_of(f"http://127.0.0.1:{port}/v1")
    assert (place.on_this_node, place.pid, place.visible) == (True, proc.pid, ("2", "GPU-fake-0"))
    telemetry, record = telemetry_of(compose_cfg, f"http://localhost:{port}/v1", tmp_path)
    assert telemetry.sampler is not None
    assert [g.index for g in telemetry.recordings[0].gpus] == [2, 0]  # not GPU 1
    assert record["gpus"] == 2 and "load" in record["phases"]
    assert record["endpoint"] == (
        f"per phase on this node: GPUs 2,GPU-fake-0 (the server's CUDA_VISIBLE_DEVICES, "
        f"pid {proc.pid})"
    )


def test_a_server_on_this_node_without_cuda_visible_devices_is_watched_on_every_gpu(
    fake_nvml, compose_cfg, tmp_path
):
    fake_nvml(NODE)
    port = free_port()  # nothing listens: its process is not found
    _, record = telemetry_of(compose_cfg, f"http://127.0.0.1:{port}/v1", tmp_path)
    assert record["gpus"] == 3
    assert record["endpoint"] == (
        "per phase on this node: every GPU of it (the server: its process not found by its port)"
    )


def test_a_server_elsewhere_is_not_watched_and_the_record_says_where(
    fake_nvml, compose_cfg, tmp_path
):
    fake_nvml(NODE)
    url = "https://gpu-node-17.example.org:8443/v1"
    telemetry, record = telemetry_of(compose_cfg, url, tmp_path)
    assert telemetry.sampler is None and telemetry.recordings == []
    assert record == {"endpoint": "not available: the endpoint runs on gpu-node-17.example.org"}
    assert place_of(f"http://{socket.gethostname()}:8000/v1").on_this_node  # by its name too
