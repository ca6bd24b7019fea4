"""The Ray cluster under the replicas (``harness.engines.ray.cluster``).

- SLURM's environment read into an allocation (node list expansion, node rank, head port);
- waiting for resources: a clear error naming what is missing, after the timeout;
- two nodes simulated on this machine with ``ray.cluster_utils.Cluster`` (a head and one more
  node, one CPU each), joined through ``ray.address``: the two replicas land on both nodes (read
  back from Ray's own placement: each actor's node id, against ``ray.nodes()``), the metrics
  equal the single engine's, and the run leaves the cluster as it found it;
- a SLURM allocation of two nodes simulated by its environment variables (both "nodes" are this
  machine): node 0's run starts the head, node 1's task joins it (``join_slurm_head``), the
  replicas land on both, and when the run ends the head stops and node 1's task ends too.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from harness.engines.ray.cluster import ClusterError, Needs, RayCluster, needs_of
from harness.machine.slurm import BASE_PORT, expand_nodelist, slurm_allocation
from tests.engines.test_ray_dp import cli_run, describe_times, is_ray, metrics
from tests.processes import descendants, wait_until


def test_slurm_node_lists_expand_like_scontrol():
    assert expand_nodelist("gpu[01-03,07],cpu5") == ["gpu01", "gpu02", "gpu03", "gpu07", "cpu5"]
    assert expand_nodelist("node1") == ["node1"]
    assert expand_nodelist("a[8-10]") == ["a8", "a9", "a10"]


def test_the_allocation_is_read_from_slurm_variables():
    env = {"SLURM_JOB_ID": "12345", "SLURM_JOB_NODELIST": "n[1-2]", "SLURM_NODEID": "1"}
    alloc = slurm_allocation(env)
    assert alloc is not None
    assert (alloc.nodes, alloc.head, alloc.node_rank) == (["n1", "n2"], "n1", 1)
    assert alloc.port == BASE_PORT + 2345
    assert slurm_allocation({**env, "SLURM_JOB_NODELIST": "n1"}) is None  # one node: local Ray
    assert slurm_allocation({}) is None


def test_needs_per_replica():
    plan = SimpleNamespace(
        data_parallel_size=2,
        device="cuda",
        tensor_parallel_size=2,
        pipeline_parallel_size=2,
        nodes_needed=2,
    )
    gpu = needs_of(plan, 16)  # type: ignore[arg-type]
    assert (gpu.gpus, gpu.nodes, gpu.per_replica) == (8, 2, {"num_cpus": 1, "num_gpus": 4})
    plan.device = "cpu"
    assert needs_of(plan, 8).per_replica == {"num_cpus": 4}  # type: ignore[arg-type]


class FixedCluster(RayCluster):
    def resources(self) -> tuple[float, float, int]:
        return 2.0, 0.0, 1


def test_a_cluster_short_of_the_plan_names_what_is_missing():
    cluster = FixedCluster("address head:6379", owned=False)
    with pytest.raises(ClusterError) as info:
        cluster.wait_for(Needs(cpus=2, gpus=8, nodes=2), timeout=0.3, poll_s=0.1)
    text = str(info.value)
    for needle in ("has 2 CPU(s), 0 GPU(s) on 1 node(s) after 0s", "missing 8 GPU(s), 1 node(s)"):
        assert needle in text, text
    assert "ray.wait_timeout_s" in text
    cluster.wait_for(Needs(cpus=2, gpus=0, nodes=1), timeout=0)  # enough: returns at once


@pytest.fixture(scope="module")
def single_run(tmp_path_factory) -> dict[str, Any]:
    return cli_run(["strategy=single"], tmp_path_factory.mktemp("single"))


@pytest.mark.ray
@pytest.mark.slow
def test_replicas_span_two_simulated_nodes_with_the_single_node_result(tmp_path: Path, single_run):
    import os

    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address)
        nodes = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
        assert len(nodes) == 2
        run = cli_run(
            ["strategy=dp", "strategy.engine=hf", f"ray.address={cluster.address}"],
            tmp_path / "two_nodes",
        )
        engine = run["summary"]["engine"]
        placed = {r["node_id"] for r in engine["replicas"]}
        assert placed == nodes, "one replica on each node"
        assert engine["builds"] == 2 and engine["nodes"] == 2
        assert engine["cluster"] == f"address {cluster.address}"
        assert metrics(run["summary"]) == metrics(single_run["summary"])
        # the run only joined: the cluster is still up, with both nodes
        assert {n["NodeID"] for n in ray.nodes() if n["Alive"]} == nodes
        print(describe_times("two nodes, dp=2", run))
    finally:
        ray.shutdown()
        cluster.shutdown()
    mine = descendants(os.getpid())
    assert wait_until(lambda: not any(map(is_ray, descendants(os.getpid()).values())), 20), mine


@pytest.mark.ray
@pytest.mark.slow
def test_a_slurm_allocation_of_two_nodes_starts_and_joins_its_own_cluster(
    tmp_path: Path, single_run
):
    import subprocess
    import sys
    import tempfile

    from ray.util import get_node_ip_address

    from harness.paths import PROJECT_ROOT
    from tests.conftest import offline_env
    from tests.processes import Watcher, live

    ip = get_node_ip_address()
    slurm = {"SLURM_JOB_ID": "777123", "SLURM_JOB_NODELIST": f"{ip},{ip}"}
    joiner_env = {
        **offline_env(tmp_path),
        **slurm,
        "SLURM_NODEID": "1",
        # node 1 notices a stopped head after this long (Ray's default: 60 s)
        "RAY_gcs_rpc_server_reconnect_timeout_s": "10",
    }
    joiner = subprocess.Popen(
        [sys.executable, "-c", JOIN, "300"],
        cwd=PROJECT_ROOT,
        env=joiner_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    watcher = Watcher(joiner.pid)
    try:
        run = cli_run(
            ["strategy=dp", "strategy.engine=hf", "ray.wait_timeout_s=240"],
            tmp_path / "slurm",
            env={**slurm, "SLURM_NODEID": "0"},
        )
        out, _ = joiner.communicate(timeout=120)
    finally:
        if joiner.poll() is None:
            joiner.kill()
    seen = watcher.stop()
    assert joiner.returncode == 0, out[-3000:]
    assert "Ray runtime started" in out
    engine = run["summary"]["engine"]
    assert engine["cluster"] == f"slurm {ip}:{20000 + 777123 % 10000}"
    assert engine["nodes"] == 2 and len({r["node_id"] for r in engine["replicas"]}) == 2
    assert engine["builds"] == 2
    assert metrics(run["summary"]) == metrics(single_run["summary"])
    assert run["ray_left"] == {}, run["ray_left"]
    assert wait_until(lambda: not any(map(is_ray, live(seen).values())), 30), live(seen)
    address_file = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"
    if address_file.exists():  # the stopped head's address is not left for ray.init() to find
        assert address_file.read_text().strip() != engine["cluster"].split()[1]
    print(describe_times("SLURM two nodes, dp=2", run))


JOIN = """
import sys
from harness.engines.ray.cluster import join_slurm_head
sys.exit(join_slurm_head(timeout=float(sys.argv[1])))
"""
