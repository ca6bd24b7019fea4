"""Plan-only latency: `python -m harness ... plan_only=true` vs `lm_eval --help`, wall time.

    python benchmarks/plan_latency.py [--repeat 5] [--json result.json]

Each command runs `--repeat` times in a fresh process; the median and the fastest are reported.
`lm_eval --help` is the floor of anything the lm-eval CLI does: its imports and argument parser.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASES = {
    "harness plan_only falcon_40b tp4 medium": [
        "-m", "harness", "model=falcon_40b", "strategy=tp4", "tier=medium", "plan_only=true",
    ],
    "harness plan_only llama3_1_70b auto/auto": [
        "-m", "harness", "model=llama3_1_70b", "strategy=auto", "tier=auto", "plan_only=true",
    ],
    "lm_eval --help": ["-m", "lm_eval", "--help"],
}  # fmt: skip


def add_cli_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repeat", type=int, default=5, help="runs per command")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")


def time_command(args: list[str], work: Path) -> float:
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, *args, f"hydra.run.dir={work}"] if args[1] == "harness" else
        [sys.executable, *args],
        cwd=work, check=True, capture_output=True,
    )  # fmt: skip
    return time.perf_counter() - start


def main(args: argparse.Namespace) -> dict:
    figures: dict = {
        "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}",
        "repeat": args.repeat,
        "cases": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for name, cmd in CASES.items():
            walls = [time_command(cmd, Path(tmp)) for _ in range(args.repeat)]
            figures["cases"][name] = {
                "median_s": round(statistics.median(walls), 3),
                "min_s": round(min(walls), 3),
                "runs_s": [round(w, 3) for w in walls],
            }
    print("| command | median s | fastest s |")
    print("|---|---|---|")
    for name, c in figures["cases"].items():
        print(f"| `{name}` | {c['median_s']:.3f} | {c['min_s']:.3f} |")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return figures


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_cli_args(parser)
    main(parser.parse_args())
