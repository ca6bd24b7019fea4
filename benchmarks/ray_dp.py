"""Ray data-parallel replicas against the in-process HF engine, on the bundled model.

Measures: local Ray start (``ray.init``), replica build (actors up, each engine loaded), and the
time of each dataset with the HF engine in process, 1 Ray replica and 2 Ray replicas; the metrics
must be the same in all three. Outputs go to a temporary folder (nothing under outputs/).

    python benchmarks/ray_dp.py [dataset ...]      # default: arith_mc reverse_gen
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import replace
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main(datasets: list[str]) -> dict[str, Any]:
    from hydra import compose, initialize_config_dir

    from harness.config.schema import to_run_config
    from harness.config.store import register_configs
    from harness.engines import ENGINES
    from harness.engines.inprocess.hf import HFEngine
    from harness.engines.ray.cluster import connect
    from harness.engines.ray.replicas import RayDPEngine
    from harness.evaluation.dataset import run_lm_eval
    from harness.evaluation.tasks import prepare_datasets
    from harness.paths import CONF_DIR
    from harness.record.metrics import headline_entry, metric_items
    from harness.runner import make_checked_plan

    register_configs()
    out = tempfile.mkdtemp(prefix="ray_dp_bench_")
    overrides = [
        "strategy=dp",
        "strategy.engine=hf",
        f"dataset=[{','.join(datasets)}]",
        "tracking=none",
        "seed=1234",
        f"outputs_root={out}",
        f"output_dir={out}/run",
    ]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        run = to_run_config(compose(config_name="config", overrides=overrides))
    plan = make_checked_plan(run)
    prepared = prepare_datasets(run)
    figures: dict[str, Any] = {"machine": f"{platform.node()}, {os.cpu_count()} CPUs"}

    def evaluate(name: str, engine: Any) -> None:
        times, scores = {}, {}
        for key, ds in prepared.items():
            start = time.perf_counter()
            result = run_lm_eval(engine.lm, ds, run)
            times[key] = round(time.perf_counter() - start, 2)
            scores[key] = metric_items(headline_entry(result, ds.config.task))
        figures[name] = {**figures.get(name, {}), "dataset_s": times, "metrics": scores}

    start = time.perf_counter()
    engine: Any = HFEngine(plan)
    figures["hf in process"] = {"build_s": round(time.perf_counter() - start, 2)}
    evaluate("hf in process", engine)
    engine.close()

    start = time.perf_counter()
    cluster = connect(plan.ray_address, len(os.sched_getaffinity(0)))
    figures["ray start s"] = round(time.perf_counter() - start, 2)
    try:
        for dp in (1, 2):
            name = f"ray dp={dp}"
            start = time.perf_counter()
            entry = ENGINES[plan.engine]
            engine = RayDPEngine(
                replace(plan, data_parallel_size=dp), entry.factory, entry.own_process
            )
            figures[name] = {"build_s": round(time.perf_counter() - start, 2)}
            evaluate(name, engine)
            figures[name]["builds"] = engine.describe()["builds"]
            engine.close()
    finally:
        cluster.close()
    metrics = [figures[k]["metrics"] for k in ("hf in process", "ray dp=1", "ray dp=2")]
    figures["metrics equal"] = all(m == metrics[0] for m in metrics)
    return figures


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:] or ["arith_mc", "reverse_gen"]), indent=1))
