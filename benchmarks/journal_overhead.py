"""What the request journal costs: lm-eval's evaluation of a dataset with the engine's LM handed
over as it is, against the same engine behind the journal (a fresh journal each time).

    python benchmarks/journal_overhead.py [--rounds 5] [--docs 3000] [--json result.json]

One process, one HF engine (the bundled model on the CPU, loaded once), the two ways alternated
round by round on each dataset: a generated arithmetic task of ``--docs`` questions (4 requests
each: loglikelihood), and the bundled generation and rolling-loglikelihood tasks. The journaled
way pays for hashing every request, writing every answer (one write per slice, an fsync every
5 s), and sending the engine slices of about 5 s instead of one call (the HF engine sorts and
batches within a call), and for the token counts ``engine.answer`` returns with each slice
(what the dataset's throughput is measured from). Both ways pass lm-eval the same requests; the
journaled one sends them through a pass-through gate, as a run with one dataset at a time does.
Medians of the wall time per dataset, and of the per-round ratios.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import add_common_args, cli, machine_description, offline_env, work_folder, write_json

ROOT = Path(__file__).resolve().parents[1]
BUNDLED = ["reverse_gen", "story_ppl"]


def add_cli_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rounds", type=int, default=5, help="rounds of both ways")
    parser.add_argument("--docs", type=int, default=3000, help="questions of the big task")
    add_common_args(parser)


def main(args: argparse.Namespace) -> dict[str, Any]:
    work = work_folder(args.out, "journal_overhead_")
    os.environ.update(offline_env(work))
    from hydra import compose, initialize_config_dir

    from harness.config.argv import with_task_source
    from harness.config.schema import to_run_config
    from harness.config.store import register_configs
    from harness.engines.base import RequestMeter
    from harness.engines.inprocess.hf import HFEngine
    from harness.evaluation.dataset import run_lm_eval
    from harness.evaluation.journaled import JournaledLM
    from harness.evaluation.tasks import prepare_datasets
    from harness.paths import CONF_DIR
    from harness.record.journal import RequestJournal
    from harness.runner import make_checked_plan

    sys.path.insert(0, str(ROOT))
    from tests.big_task import write_big_task

    tasks = write_big_task(work, args.docs)
    datasets = ["big_mc", *BUNDLED]
    register_configs()
    overrides = [
        f"dataset=[{','.join(datasets)}]", "tracking=none", f"outputs_root={work / 'out'}",
        f"task_paths=[{tasks}]", f"allowed_roots=[{work}]",
    ]  # fmt: skip
    overrides = with_task_source(overrides)  # big_mc: a task with no option file
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        run = to_run_config(compose(config_name="config", overrides=overrides))
    plan = make_checked_plan(run)
    prepared = prepare_datasets(run)
    engine = HFEngine(plan)
    times: dict[str, dict[str, list[float]]] = {w: {d: [] for d in datasets} for w in WAYS}
    requests: dict[str, int] = {}
    journals = Path(tempfile.mkdtemp(dir=work, prefix="journals_"))
    try:
        for r in range(args.rounds):
            for way in WAYS[r % 2 :] + WAYS[: r % 2]:
                for name in datasets:
                    meter = RequestMeter()
                    lm: Any = engine.lm
                    journal = RequestJournal(journals, f"{name}-{r}-{way}", "bench")
                    start = time.perf_counter()
                    if way == "journaled":
                        lm = JournaledLM(engine, journal, {"pid": os.getpid()}, meter=meter)
                    run_lm_eval(lm, prepared[name], run)
                    journal.close()
                    times[way][name].append(time.perf_counter() - start)
                    requests[name] = max(requests.get(name, 0), meter.requests)
                    journal.delete()
    finally:
        engine.close()
    medians = {w: {d: statistics.median(v) for d, v in t.items()} for w, t in times.items()}
    ratios = {
        d: statistics.median(
            j / p for j, p in zip(times["journaled"][d], times["plain"][d], strict=True)
        )
        for d in datasets
    }
    where = machine_description()
    print(f"\nrequest journal overhead, {args.rounds} alternating rounds ({where}):")
    print("\n| dataset | requests | plain s | journaled s | journaled / plain (median of rounds) |")
    print("|---|---|---|---|---|")
    for d in datasets:
        plain, journaled = medians["plain"][d], medians["journaled"][d]
        print(f"| {d} | {requests[d]} | {plain:.3f} | {journaled:.3f} | {ratios[d]:.3f} |")
    figures = {"rounds": args.rounds, "times_s": times, "medians_s": medians, "ratios": ratios}
    figures["requests"] = requests
    write_json(args.json, figures)
    return figures


WAYS = ["plain", "journaled"]

if __name__ == "__main__":
    cli(__doc__, add_cli_args, main)
