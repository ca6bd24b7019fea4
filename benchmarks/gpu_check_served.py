"""The GPU check's served path (issue 33): vLLM's own OpenAI server on the GPU with the bundled
model, one bundled dataset evaluated through it (``strategy=endpoint``), the same dataset with the
in-process vLLM engine, and the metrics of the two compared (benchmarks/gpu_check.py runs it).

The server's command line is the one ``python -m harness.serve`` would start for the in-process
run's plan (``harness.service.server.server_command``: ``python -m
vllm.entrypoints.openai.api_server --model plugins/models/tiny_char`` with the plan's dtype,
context, seed and engine flags), printed by the node's own Python, so both sides run the same
deployment. The server is stopped (its whole process group) before the in-process engine loads:
the two never share the GPU. The endpoint run's telemetry is recorded too: its server runs on this
node, so it is watched per phase on the GPUs the server sees.

The node's image has no vLLM and its CUDA wheel (hundreds of MiB) cannot travel with the check
(64 MiB): there the step is ``skipped``, saying so, never ``ok``. The dry run runs it on this
machine's CPU build of vLLM (its server and engine on the CPU), so that every line of it runs.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from typing import Any

from gpu_check_steps import ROOT, Context, StepFailed, StepSkipped, env, newest_run, run

DATASET = "arith_mc"
LIMIT = 64
"""Documents of the dataset evaluated on each side (both the same)."""
MODEL = ["model=tiny_char", "strategy=vllm", "seed=1234"]
"""The in-process run's model and strategy; the server is planned from the same."""
READY_S = 240.0
"""Longest wait for the server to list its model (CUDA graphs captured on the GPU included)."""


def has_vllm(ctx: Context) -> bool:
    """vLLM imports under the step's Python and environment (on the node: its own image)."""
    probe = "import importlib.util, sys; sys.exit(importlib.util.find_spec('vllm') is None)"
    given = env(ctx, fake_gpu=False, block=False)
    return subprocess.run([ctx.python, "-c", probe], env=given, cwd=ROOT).returncode == 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_plan(ctx: Context, port: int) -> dict[str, Any]:
    """The server command and environment ``harness.serve`` derives from ``MODEL``'s plan on
    this node, for ``127.0.0.1:port`` (printed by the step's Python as JSON)."""
    code = (
        "import json, sys\n"
        "from harness.service.server import server_command, server_environment\n"
        "from harness.service.start import composed, serving_plan\n"
        "plan = serving_plan(composed(sys.argv[2:]))\n"
        "print(json.dumps({'command': server_command(plan, '127.0.0.1', int(sys.argv[1])),\n"
        "                  'env': server_environment(plan), 'device': plan.device}))\n"
    )
    args = ["-c", code, str(port), *MODEL, *cpu(ctx)]
    text = run(ctx, "served", args, fake_gpu=False, block=False)
    return json.loads(text.strip().splitlines()[-1])


def cpu(ctx: Context) -> list[str]:
    return ["strategy.device=cpu"] if ctx.dry else []


def start_server(ctx: Context, planned: dict[str, Any]) -> subprocess.Popen[bytes]:
    log = ctx.work / "log_served_server.txt"
    given = env(ctx, fake_gpu=False, block=False) | planned["env"]
    with log.open("wb") as out:
        return subprocess.Popen(
            planned["command"],
            cwd=ROOT,
            env=given,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def wait_ready(ctx: Context, proc: subprocess.Popen[bytes], port: int) -> float:
    """Seconds until the server lists its model; StepFailed if it exits or takes too long."""
    started = time.monotonic()
    limit = min(READY_S, ctx.left("served") - 60)
    while time.monotonic() - started < limit:
        if proc.poll() is not None:
            raise StepFailed(f"vLLM's server exited {proc.returncode} (log_served_server.txt)")
        with contextlib.suppress(OSError, ValueError):
            url = f"http://127.0.0.1:{port}/v1/models"
            with urllib.request.urlopen(url, timeout=5) as reply:
                if json.loads(reply.read()).get("data"):
                    return time.monotonic() - started
        time.sleep(1)
    raise StepFailed(f"vLLM's server listed no model within {limit:.0f}s")


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server's group, SIGKILL what is left after 30 s."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def evaluate(ctx: Context, name: str, *overrides: str) -> dict[str, Any]:
    """One ``python -m harness`` run of ``DATASET`` (its own emptied outputs); its summary."""
    outputs = ctx.work / f"served_{name}"
    subprocess.run(["rm", "-rf", str(outputs)], check=True)
    args = ["-m", "harness", "tracking=none", f"outputs_root={outputs}", f"dataset=[{DATASET}]"]
    args += [f"dataset.{DATASET}.limit={LIMIT}", "telemetry.interval_s=0.2", *overrides]
    run(ctx, "served", args, fake_gpu=False, block=False)
    summary: dict[str, Any] = json.loads((newest_run(outputs) / "summary.json").read_text())
    if summary["failed"]:
        raise StepFailed(f"{name}: {DATASET} failed: {summary['failed']}")
    return summary


def step_served(ctx: Context) -> tuple[str, dict[str, Any]]:
    if not has_vllm(ctx):
        raise StepSkipped(
            "vLLM is not installed on this node, and its CUDA wheel cannot travel with the "
            "check (64 MiB): the served path needs a node image with vLLM"
        )
    port = free_port()
    planned = server_plan(ctx, port)
    proc = start_server(ctx, planned)
    try:
        ready_s = wait_ready(ctx, proc, port)
        url = f"http://127.0.0.1:{port}/v1"
        served = evaluate(ctx, "endpoint", "model=tiny_char", "strategy=endpoint",
                          f"strategy.base_url={url}")  # fmt: skip
    finally:
        stop_server(proc)
    in_process = evaluate(ctx, "in_process", *MODEL, *cpu(ctx))
    got, want = served["datasets"][DATASET]["metrics"], in_process["datasets"][DATASET]["metrics"]
    figures = {
        "server_command": planned["command"],
        "device": planned["device"],
        "server_ready_s": round(ready_s, 1),
        "endpoint": _side(served),
        "in_process": _side(in_process),
        "metrics_equal": got == want,
        # the in-process vLLM engine's start-up memory beside the plan's (issue 37)
        "memory_check": in_process.get("memory_check", {}),
    }
    line = (
        f"{DATASET} (limit {LIMIT}) on {planned['device']}: served {got} vs in-process {want}; "
        f"server ready in {ready_s:.0f}s, in-process load {in_process['load_time_s']:.1f}s; "
        f"{memory_line(figures['memory_check'])}"
    )
    if got != want:
        raise StepFailed(f"metrics differ: {line}")
    return f"metrics equal: {line}", figures


def memory_line(check: dict[str, Any]) -> str:
    """The memory check in a few words: each figure planned -> measured (difference)."""
    rows = [
        f"{name} {row['planned']:g} -> {row['measured']:g} ({row['diff_pct']:+.1f}%)"
        for name, row in (check.get("figures") or {}).items()
        if row.get("diff_pct") is not None
    ]
    off = len(check.get("warnings") or [])
    return f"memory check ({off} off): " + (", ".join(rows) or "nothing reported")


def _side(summary: dict[str, Any]) -> dict[str, Any]:
    dataset = summary["datasets"][DATASET]
    return {
        "metrics": dataset["metrics"],
        "eval_time_s": dataset["eval_time_s"],
        "requests_retried": dataset.get("requests_retried"),
        "load_time_s": summary["load_time_s"],
        "telemetry": summary.get("telemetry", {}),
        "engine_telemetry": summary["engine"].get("telemetry"),
        "tokenizer_check": summary["engine"].get("tokenizer_check"),
    }
