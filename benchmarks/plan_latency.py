"""Plan-only latency: `python -m harness ... plan_only=true` vs `lm_eval --help`, wall time.

    python benchmarks/plan_latency.py [--repeat 5] [--json result.json]

Each command runs `--repeat` times in a fresh process, in paired rounds (every command once per
round); the median, the fastest and the median of the per-round ratios to `lm_eval --help`
are reported. Harness's modules are compiled to bytecode first, as an installed package's are.
Everything a run writes goes to a temporary folder (its run dir and ``outputs_root``).
`lm_eval --help` is the floor of anything the lm-eval CLI does: its imports and argument parser.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import add_common_args, cli, machine_description, write_json

ROOT = Path(__file__).resolve().parents[1]
CASES = {
    "harness plan_only falcon_40b tp4 medium": [
        "-m", "harness", "model=falcon_40b", "strategy=tp4", "tier=medium", "plan_only=true",
    ],
    "harness plan_only llama3_1_70b auto/auto": [
        "-m", "harness", "model=llama3_1_70b", "strategy=auto", "tier=auto", "plan_only=true",
    ],
    "harness plan_only falcon_40b tp4 (tier local, measured here)": [
        "-m", "harness", "model=falcon_40b", "strategy=tp4", "plan_only=true",
    ],
    "harness plan_only model=hf Qwen/Qwen3-8B (from a hub cache)": [
        "-m", "harness", "model=hf", "model.pretrained=Qwen/Qwen3-8B", "tier=small",
        "plan_only=true",
    ],
    "lm_eval --help": ["-m", "lm_eval", "--help"],
}  # fmt: skip
QWEN3_8B_CONFIG = ROOT / "tests" / "fixtures" / "hf_configs" / "qwen3_8b.json"


def hub_cache(root: Path) -> Path:
    """A hub cache holding Qwen3-8B's config.json and an index, as `hf download
    Qwen/Qwen3-8B config.json model.safetensors.index.json` leaves it (no weights)."""
    snapshot = root / "models--Qwen--Qwen3-8B" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (root / "models--Qwen--Qwen3-8B" / "refs").mkdir()
    (root / "models--Qwen--Qwen3-8B" / "refs" / "main").write_text("0" * 40)
    (snapshot / "config.json").write_text(QWEN3_8B_CONFIG.read_text())
    index = {"metadata": {"total_size": 2 * 8_190_735_360}, "weight_map": {}}
    (snapshot / "model.safetensors.index.json").write_text(json.dumps(index))
    return root


def add_cli_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repeat", type=int, default=5, help="runs per command")
    add_common_args(parser, out=False)


def time_command(args: list[str], work: Path) -> float:
    env = {**os.environ, "HF_HUB_CACHE": str(work / "hub")}
    start = time.perf_counter()
    # A plan that does not fit here exits 1 and its time counts the same; anything else is a bug.
    proc = subprocess.run(
        [sys.executable, *args, f"hydra.run.dir={work}", f"outputs_root={work / 'outputs'}"]
        if args[1] == "harness" else
        [sys.executable, *args],
        cwd=work, capture_output=True, env=env, text=True,
    )  # fmt: skip
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"{args} exited {proc.returncode}: {proc.stderr[-2000:]}")
    return time.perf_counter() - start


def compile_bytecode() -> None:
    """Harness's modules compiled to bytecode before anything is timed, as lm-eval's were when
    pip installed it. An editable install leaves that to the first import, and that import
    writes nothing where PYTHONDONTWRITEBYTECODE is set (the developers' machine sets it): every
    timed call then compiled harness from source (about 20 ms of a 0.33 s plan), which no
    installed copy does and which lm-eval's side of the pair never paid."""
    import compileall

    for folder in ("harness", "plugins"):
        if not compileall.compile_dir(ROOT / folder, quiet=1):
            raise RuntimeError(f"{folder}/ does not compile")


def main(args: argparse.Namespace) -> dict:
    figures: dict = {
        "machine": machine_description(),
        "repeat": args.repeat,
        "cases": {},
        "bytecode": "harness/ and plugins/ compiled before timing (compile_bytecode)",
    }
    compile_bytecode()
    floor = "lm_eval --help"
    walls: dict[str, list[float]] = {name: [] for name in CASES}
    with tempfile.TemporaryDirectory() as tmp:
        hub_cache(Path(tmp) / "hub")
        # Paired: each round runs every command once, back to back, so that a ratio compares
        # commands under the same load of the machine.
        for _ in range(args.repeat):
            for name, cmd in CASES.items():
                walls[name].append(time_command(cmd, Path(tmp)))
    for name, runs in walls.items():
        ratios = [w / f for w, f in zip(runs, walls[floor], strict=True)]
        figures["cases"][name] = {
            "median_s": round(statistics.median(runs), 3),
            "min_s": round(min(runs), 3),
            "runs_s": [round(w, 3) for w in runs],
            "ratio_to_lm_eval_help": round(statistics.median(ratios), 3),
            "ratios": [round(r, 3) for r in ratios],
        }
    print(f"| command | median s | fastest s | x `{floor}` (median of paired rounds) |")
    print("|---|---|---|---|")
    for name, c in figures["cases"].items():
        ratio = c["ratio_to_lm_eval_help"]
        print(f"| `{name}` | {c['median_s']:.3f} | {c['min_s']:.3f} | {ratio:.2f} |")
    write_json(args.json, figures)
    return figures


if __name__ == "__main__":
    cli(__doc__, add_cli_args, main)
