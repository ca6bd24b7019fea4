"""A password in a swept tracking URI, through a submitted sweep (submitit_local, and SLURM).

The jobs track to a real `mlflow server` behind a gate that lets a request through only with the
planted password (HTTP basic auth, as the URI's ``user:password@`` gives it): runs found in the
store prove that each job used the URI whole. Then every file of the sweep directory, submitit's
pickles included, and the sweep's console are searched for the password: none holds it.
"""

from __future__ import annotations

import base64
import http.client
import json
import secrets
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.conftest import offline_env
from tests.processes import wait_until
from tests.sweep.test_sweeps import SEARCHPATH
from tests.tracking.test_tracking_server import serve_mlflow

pytestmark = pytest.mark.slow

USER = "alice"


def gate(upstream: str, password: str) -> Iterator[tuple[str, dict[str, int]]]:
    """An HTTP proxy to ``upstream`` that answers 401 unless the request carries basic auth
    ``USER:password``; yields its URL (host:port, no scheme) and its counts of requests let
    through and refused."""
    host, _, port = upstream.removeprefix("http://").partition(":")
    wanted = "Basic " + base64.b64encode(f"{USER}:{password}".encode()).decode()
    counts = {"passed": 0, "refused": 0}

    class Gate(BaseHTTPRequestHandler):
        def _forward(self) -> None:
            if self.headers.get("Authorization") != wanted:
                counts["refused"] += 1
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="mlflow"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            counts["passed"] += 1
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            headers = {
                k: v
                for k, v in self.headers.items()
                if k.lower() not in ("host", "authorization", "connection")
            }
            conn = http.client.HTTPConnection(host, int(port), timeout=60)
            conn.request(self.command, self.path, body=body, headers=headers)
            answer = conn.getresponse()
            data = answer.read()
            self.send_response(answer.status)
            for k, v in answer.getheaders():
                if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            conn.close()

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Gate)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}", counts
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def gated_mlflow(tmp_path_factory):
    """A real `mlflow server` behind a basic-auth gate: (gate host:port, password, counts,
    the server's URL)."""
    password = "pw-" + secrets.token_hex(8)
    server = serve_mlflow(tmp_path_factory.mktemp("mlflow_server"))
    url = next(server)
    front = gate(url, password)
    where, counts = next(front)
    yield where, password, counts, url
    next(front, None)
    next(server, None)


LAUNCHERS = {
    "submitit_local": ["hydra/launcher=submitit_local", "hydra.launcher.array_parallelism=2"],
    "slurm": [SEARCHPATH, "tier=slurm_1cpu", "hydra/launcher=slurm", "hydra.launcher.poll_s=2"],
}


@pytest.mark.parametrize(
    "launcher", ["submitit_local", pytest.param("slurm", marks=pytest.mark.slurm)]
)
def test_a_password_in_a_swept_uri_reaches_the_jobs_but_no_file_of_the_sweep(
    gated_mlflow, launcher, request, tmp_path
):
    from mlflow.tracking import MlflowClient

    if launcher == "slurm":
        request.getfixturevalue("slurm_cluster")
    where, password, counts, url = gated_mlflow
    passed = counts["passed"]
    host, port = where.split(":")
    uris = f"http://{USER}:{password}@{host}:{port},http://{USER}:{password}@localhost:{port}"
    proc = subprocess.run(
        [sys.executable, "-m", "harness", "-m", "tracking=server", f"tracking.uri={uris}",
         "dataset=[arith_mc]", "dataset.arith_mc.limit=2", *LAUNCHERS[launcher],
         f"outputs_root={tmp_path / 'out'}"],
        cwd=tmp_path, env=offline_env(tmp_path), capture_output=True, text=True, timeout=300,
        check=False,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    (sweep,) = (tmp_path / "out" / "multirun").iterdir()
    rows = json.loads((sweep / "sweep_outcome.json").read_text())
    assert [r["state"] for r in rows] == ["COMPLETED"] * 2, out[-3000:]

    # Each job reached the server through the gate, with the password: its run is there.
    assert counts["passed"] > passed, counts
    client = MlflowClient(tracking_uri=url)

    def parents() -> dict:
        found = client.search_runs([client.get_experiment_by_name("harness").experiment_id])
        return {
            r.data.tags["run_dir"]: r
            for r in found
            if "mlflow.parentRunId" not in r.data.tags and r.info.status != "RUNNING"
        }

    # A job's idle-priority tracking worker may finish its writing after the job has ended (on a
    # busy machine), as harness/tracking says: wait for it, within a minute.
    assert wait_until(lambda: {r["run_dir"] for r in rows} <= set(parents()), 60, 0.5), rows
    by_dir = parents()
    for row, shown in zip(rows, (host, "localhost"), strict=True):
        run = by_dir[row["run_dir"]]
        assert run.info.status == "FINISHED"
        assert run.data.params["tracking.uri"] == f"http://***@{shown}:{port}"

    # Nowhere in the sweep directory (pickles, logs, run directories) nor on the console.
    files = [p for p in sweep.rglob("*") if p.is_file()]
    pickles = [p for p in files if p.suffix == ".pkl"]
    assert any(p.name.endswith("_submitted.pkl") for p in pickles), files
    assert any(p.name.endswith("_result.pkl") for p in pickles), files
    assert any(p.name == "overrides.yaml" for p in files)
    leaked = [p for p in files if password.encode() in p.read_bytes()]
    assert not leaked, leaked
    assert password not in out
    for row in rows:  # the run's own records, masked as a single run's are
        config = (Path(row["run_dir"]) / "config.yaml").read_text()
        assert "uri: http://***@" in config
