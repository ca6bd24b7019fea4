"""A real service: ``python -m harness.serve`` starts vLLM's OpenAI server (the CPU build) once,
bound off loopback so that it requires the API key harness generated; separate
``python -m harness`` runs attach to it, one that plans another strategy does not; a server
SIGKILLed mid-dataset is restarted once on its port and the dataset resumes from its journal;
stopping it leaves no process. One server start for the module (about 60 s here) and one
restart; every run is its own process, as a user's."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from harness.service.registry import ServiceEntry, read_entry, read_registry
from harness.service.server import group_members
from tests.conftest import offline_env, run_module
from tests.processes import live, wait_until

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

BUILD_LINE = "Initializing a V1 LLM engine"
"""vLLM logs this once per engine it builds: the server's start count."""
RUN_TIMEOUT = 600
EXPECTED = {"arith_mc": ("acc", 0.995), "reverse_gen": ("exact_match", 1.0)}
"""The HF engine's figures for the bundled model (tests/engines/test_vllm.py holds them equal)."""


def serve(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_module("harness.serve", *args, f"outputs_root={root / 'outputs'}", cwd=root)


def the_entry(root: Path) -> tuple[Path, ServiceEntry]:
    (path, entry), *others = read_registry(root / "outputs").entries.items()
    assert not others
    return path, entry


def harness_run(root: Path, name: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "harness",
            *([] if any(a.startswith("model=") for a in args) else ["model=tiny_char"]),
            "tracking=none",
            f"outputs_root={root / 'outputs'}",
            f"output_dir={root / name}",
            *args,
        ],
        cwd=root,
        env=offline_env(root),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finished(proc: subprocess.Popen[str], root: Path, name: str) -> dict[str, Any]:
    out, _ = proc.communicate(timeout=RUN_TIMEOUT)
    assert proc.returncode == 0, out[-4000:]
    return {"out": out, "summary": json.loads((root / name / "summary.json").read_text())}


def metric(run: dict[str, Any], dataset: str) -> float:
    key, _ = EXPECTED[dataset]
    return float(run["summary"]["datasets"][dataset]["metrics"][key])


def builds(entry: ServiceEntry) -> int:
    return Path(entry.log).read_text(errors="replace").count(BUILD_LINE)


@pytest.fixture(scope="module")
def service(tmp_path_factory) -> Any:
    """One service for the module, bound to 0.0.0.0 (a key required); stopped at the end
    whatever happened."""
    root = tmp_path_factory.mktemp("service")
    started = time.perf_counter()
    proc = serve(root, "model=tiny_char", "strategy=vllm", "service.host=0.0.0.0")
    took = time.perf_counter() - started
    try:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        path, entry = the_entry(root)
        yield {"root": root, "path": path, "entry": entry, "out": proc.stdout, "took": took}
    finally:
        serve(root, "--stop", "all")


def test_serve_waits_saying_for_what_and_registers_a_keyed_service(service):
    entry, out = service["entry"], service["out"]
    print(f"serve command: {service['took']:.0f}s")
    assert "waiting for vLLM's OpenAI server" in out and f"{entry.url}/models" in out
    assert f"service {entry.id} ready at {entry.url}" in out
    assert entry.api_key and entry.api_key not in out  # masked on the console
    assert oct(service["path"].stat().st_mode & 0o777) == "0o600"
    assert entry.host == "0.0.0.0" and entry.starts == 1 and builds(entry) == 1
    assert entry.served["max_model_len"] == 256
    assert entry.api_key not in " ".join(Path(f"/proc/{entry.pid}/cmdline").read_text().split())
    plain = urllib.request.Request(f"{entry.url}/models")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(plain, timeout=10)
    assert refused.value.code == 401  # no key, no model
    keyed = urllib.request.Request(
        plain.full_url, headers={"Authorization": f"Bearer {entry.api_key}"}
    )
    with urllib.request.urlopen(keyed, timeout=10) as reply:
        assert json.load(reply)["data"][0]["id"] == entry.model_id
    listed = serve(service["root"], "--list")
    assert entry.id in listed.stdout and "ready" in listed.stdout
    again = serve(service["root"], "model=tiny_char", "strategy=vllm", "service.host=0.0.0.0")
    assert f"service {entry.id} serves this model and deployment" in again.stdout
    assert builds(entry) == 1


def test_two_runs_attach_and_the_model_loads_once(service):
    """Two separate runs with different datasets: both attached, nothing loaded, the second
    in under 2 s; the metrics are the in-process engines'; the key in no file nor line."""
    root, entry = service["root"], service["entry"]
    first = finished(
        harness_run(root, "first", "strategy=vllm", "dataset=[arith_mc]"), root, "first"
    )
    second = finished(
        harness_run(root, "second", "strategy=vllm", "dataset=[reverse_gen]"), root, "second"
    )
    for run in (first, second):
        assert f"attached to service {entry.id} at {entry.url}" in run["out"]
        assert "loading tiny_char" not in run["out"]
        assert run["summary"]["engine"]["service_id"] == entry.id
    assert second["summary"]["load_time_s"] < 2.0, second["summary"]["load_time_s"]
    print(f"load times: {first['summary']['load_time_s']}s, {second['summary']['load_time_s']}s")
    assert metric(first, "arith_mc") == EXPECTED["arith_mc"][1]
    assert metric(second, "reverse_gen") == EXPECTED["reverse_gen"][1]
    assert builds(entry) == 1 and read_entry(service["path"]).starts == 1
    key = entry.api_key
    assert key and all(key not in run["out"] for run in (first, second))
    for folder in (root / "first", root / "second", root / "outputs" / "store"):
        for file in folder.rglob("*"):
            assert not file.is_file() or key.encode() not in file.read_bytes(), file


def test_runs_of_another_strategy_or_model_do_not_attach(service):
    """strategy=single (the HF engine) and model=tiny_char_chat with strategy=vllm each load
    their own engine (another deployment of the same model: tests/service/test_matching.py)."""
    root = service["root"]
    run = finished(harness_run(root, "hf", "strategy=single", "dataset=[arith_mc]"), root, "hf")
    assert "attached to service" not in run["out"] and "loading tiny_char (single)" in run["out"]
    assert metric(run, "arith_mc") == EXPECTED["arith_mc"][1]
    chat = ("model=tiny_char_chat", "strategy=vllm", "dataset=[arith_mc]")
    other = finished(harness_run(root, "chat", *chat, "dataset.arith_mc.limit=20"), root, "chat")
    assert "attached to service" not in other["out"], other["out"][-3000:]
    assert "loading tiny_char_chat (vllm)" in other["out"]
    assert builds(service["entry"]) == 1


def test_a_service_killed_mid_dataset_is_restarted_and_the_dataset_resumes(service):
    """SIGKILL of the server while a dataset runs: the run restarts it once on the same port,
    the dataset resumes from its journal, its metric is the same."""
    root, path, entry = service["root"], service["path"], service["entry"]
    journal = root / "outputs" / "store" / "tiny_char" / "journal"
    # one request at a time, journaled in small slices: the kill lands inside the dataset
    slow = ("strategy.num_concurrent=1", "strategy.batch_size=1", "strategy.journal_slice_s=0.5")
    proc = harness_run(
        root, "killed", "strategy=vllm", "dataset=[reverse_gen]", "rerun=true", *slow
    )
    try:
        answered = wait_until(
            lambda: any(
                len(p.read_bytes().splitlines()) > 1 for p in journal.glob("reverse_gen-*")
            ),
            RUN_TIMEOUT,
            0.05,
        )
        assert answered, "the run journaled nothing"
        os.kill(entry.pid, signal.SIGKILL)
        run = finished(proc, root, "killed")
    finally:
        if proc.poll() is None:
            proc.kill()
    after = read_entry(path)
    assert after.starts == 2 and after.port == entry.port and after.pid != entry.pid
    assert f"service {entry.id} restarted at {entry.url}" in run["out"], run["out"][-3000:]
    assert builds(after) == 2
    assert metric(run, "reverse_gen") == EXPECTED["reverse_gen"][1]
    outcome = run["summary"]["datasets"]["reverse_gen"]
    assert outcome["requests_journaled"] > 0  # answered before the kill: not asked again
    assert outcome["requests_journaled"] + outcome["requests"] == 200  # one request a document
    assert run["summary"]["engine"]["restarts"] == 1
    print(f"restart: {outcome['requests_journaled']} answers from the journal, the rest asked")
    service["entry"] = after


def test_stop_leaves_no_process(service):
    root, entry = service["root"], service["entry"]
    members = group_members(entry.pid, entry.pid_start)
    assert members, "the service runs before it is stopped"
    stopped = serve(root, "--stop", entry.id)
    assert stopped.returncode == 0 and f"stopped service {entry.id}" in stopped.stdout
    assert wait_until(lambda: live(members) == {}, 30), live(members)
    assert group_members(entry.pid, entry.pid_start) == []
    assert read_registry(root / "outputs").entries == {}
