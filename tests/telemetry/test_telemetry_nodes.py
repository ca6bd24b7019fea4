"""The per-node sampler on a real two-node Ray cluster (``ray.cluster_utils.Cluster``) on this
machine: each node's actor reads its own fake NVML (two GPUs on one node, four on the other) and
the series of both come back to the driver, labelled by node."""

from __future__ import annotations

import json
import time

import pytest

from harness.telemetry.export import csv_points, to_csv
from harness.telemetry.summary import summarize
from tests.conftest import FAKE_NVML
from tests.telemetry.test_telemetry import NODE

pytestmark = [pytest.mark.slow, pytest.mark.ray]


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory):
    import ray
    from ray.cluster_utils import Cluster

    tmp_path = tmp_path_factory.mktemp("two_nodes")
    scripts = []
    for name, gpus in (("head", 2), ("worker", 4)):
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps({"gpus": (NODE["gpus"] * 2)[:gpus]}))
        scripts.append({"PYTHONPATH": str(FAKE_NVML), "FAKE_NVML_SCRIPT": str(path)})
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "include_dashboard": False, "env_vars": scripts[0]},
    )
    cluster.add_node(num_cpus=1, env_vars=scripts[1])
    ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False)
    try:
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()


def test_every_node_is_sampled_and_labelled(two_nodes):
    import ray

    from harness.telemetry.nodes import NodeSamplers

    samplers = NodeSamplers.start(interval_s=0.05)
    assert sorted(n["gpus"] for n in samplers.nodes) == [2, 4]
    assert len({n["node_id"] for n in samplers.nodes}) == 2
    samplers.mark("load")
    time.sleep(0.5)
    samplers.mark(None)
    samplers.mark("arith_mc")
    time.sleep(0.5)
    samplers.mark(None)
    recordings = samplers.stop()

    assert len(recordings) == 2 and len({r.node for r in recordings}) == 2
    assert sorted(len(r.gpus) for r in recordings) == [2, 4]
    for rec in recordings:
        assert [p.name for p in rec.phases] == ["load", "arith_mc"]
        assert len(rec.samples) >= 5 * len(rec.gpus), len(rec.samples)
    load, arith = summarize(recordings)
    assert load.duration_s == pytest.approx(0.5, abs=0.4)
    labels = [g.gpu for g in arith.gpus]
    assert len(labels) == 6 and len(set(labels)) == 6
    assert {label.rsplit("/", 1)[0] for label in labels} == {r.node for r in recordings}
    assert arith.energy_j is not None and arith.energy_j > 0
    keys = {key for key, *_ in csv_points(to_csv(recordings, []))}
    assert {f"{r.node}/gpu0/memory_used_mib" for r in recordings} <= keys
    assert not ray.util.list_named_actors()  # nothing left running on the nodes


def test_a_run_records_its_own_node_and_the_others(two_nodes, fake_nvml, tmp_path):
    """The run's Telemetry samples this node (three fake GPUs, in-process) and follows the other
    node through its actor; telemetry.json, the CSV and the plot hold both."""
    from types import SimpleNamespace

    from harness.config.schema import TelemetryConfig
    from harness.telemetry.session import Telemetry

    fake_nvml(NODE)
    plan = SimpleNamespace(
        device="cuda", tensor_parallel_size=1, model="tiny", strategy="tp8", engine="vllm"
    )
    telemetry = Telemetry.start(TelemetryConfig(enabled=True, interval_s=0.05), plan)
    telemetry.on_event("load_started", {})
    telemetry.follow_cluster()  # what an engine over several nodes calls once its cluster is up
    time.sleep(0.4)
    telemetry.on_event("loaded", {})
    telemetry.on_event("dataset_started", {"dataset": "arith_mc"})
    time.sleep(0.4)
    telemetry.on_event("dataset_done", {"dataset": "arith_mc"})
    outcome = SimpleNamespace(
        name="arith_mc", status="ok", resumed=False, prompt_tokens=900, generated_tokens=100
    )
    kept = telemetry.record(tmp_path, [outcome])
    assert kept is not None and len(kept["nodes"]) == 2 and kept["gpus"] == 3 + 4
    described = json.loads((tmp_path / "telemetry.json").read_text())
    assert [len(n["gpus"]) for n in described["nodes"]] == [3, 4]
    load, arith = described["phases"]
    assert len(load["gpus"]) == len(arith["gpus"]) == 7  # the other node joined during the load
    other = described["nodes"][1]["node"]
    assert sum(g["gpu"].startswith(f"{other}/") for g in arith["gpus"]) == 4
    rows = (tmp_path / "telemetry.csv").read_text().splitlines()[1:]
    assert {row.split(",")[0] for row in rows} == {n["node"] for n in described["nodes"]}
    assert (tmp_path / "telemetry.png").stat().st_size > 10_000
