"""Tracking to a real MLflow server over HTTP, and to one that is not there."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import assert_mlflow_matches_results, offline_env, run_harness

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    yield from serve_mlflow(tmp_path_factory.mktemp("mlflow_server"))


def serve_mlflow(tmp: Path, port: int | None = None) -> Iterator[str]:
    """A real `mlflow server` on 127.0.0.1 (on ``port``, else a free one), its store in ``tmp``
    (mlflow.db, artifacts/); yields its URL and stops it afterwards."""
    port = port or free_port()
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
            "--backend-store-uri", f"sqlite:///{tmp / 'mlflow.db'}",
            "--artifacts-destination", str(tmp / "artifacts"), "--workers", "1",
        ],
        env=offline_env(tmp), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    break
        except OSError:
            pass
        assert proc.poll() is None, "mlflow server exited"
        assert time.monotonic() < deadline, "mlflow server did not come up in 90 s"
        time.sleep(0.5)
    yield url
    proc.terminate()
    proc.wait(timeout=30)


def test_run_tracked_over_http_matches_results(mlflow_server, tmp_path):
    from mlflow.tracking import MlflowClient

    tasks = ["arith_mc", "story_ppl"]
    proc = run_harness(
        [
            f"dataset=[{','.join(tasks)}]",
            "dataset.arith_mc.limit=40",
            "tracking=server",
            f"tracking.uri={mlflow_server}",
            f"output_dir={tmp_path / 'run'}",
        ],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "MLflow" not in proc.stdout + proc.stderr, proc.stdout[-3000:]
    assert_mlflow_matches_results(MlflowClient(tracking_uri=mlflow_server), tmp_path / "run", tasks)


def test_unreachable_server_degrades_to_a_warning(tmp_path):
    port = free_port()  # nothing listens there
    proc = run_harness(
        [
            "dataset=[arith_mc]",
            "dataset.arith_mc.limit=20",
            "tracking=server",
            f"tracking.uri=http://127.0.0.1:{port}",
            f"output_dir={tmp_path / 'run'}",
        ],
        tmp_path,
    )
    out = proc.stdout + proc.stderr  # Hydra's log handler writes to stdout
    assert proc.returncode == 0, out[-3000:]
    assert "MLflow start failed" in out
    assert "tracking is off for the rest of this run" in out
    assert (tmp_path / "run" / "results" / "arith_mc.json").is_file()
    assert "Traceback" not in out
