"""One vLLM engine across nodes (``harness.engines.ray.multinode``): the cluster, then the engine.

No GPU and no multi-node vLLM can run here, so the engine is a stand-in that does what vLLM's Ray
executor does first: ``ray.init()`` in its own process, joining whatever cluster ``RAY_ADDRESS``
names. The cluster is real: two simulated nodes (``ray.cluster_utils.Cluster``) declaring four
GPUs each, as two nodes of an ``xlarge``-like tier would.
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any

import pytest

from harness.engines.ray.multinode import multinode_problems, spans_nodes
from harness.planning.auto import plan_run
from tests.fake_engine import FakeLM
from tests.planning.test_plan import run_config


class RayJoiningEngine:
    """Joins the cluster named by ``RAY_ADDRESS`` from its own process, as vLLM's executor does."""

    def __init__(self) -> None:
        import ray

        ray.init(log_to_driver=False)  # no address: RAY_ADDRESS, as vLLM's initialize_ray_cluster
        self.address = os.environ.get("RAY_ADDRESS")
        self.nodes = len([n for n in ray.nodes() if n["Alive"]])
        self.gpus = ray.cluster_resources().get("GPU", 0)
        self.lm = FakeLM()  # answers the health check

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "stand-in",
            "address": self.address,
            "nodes_seen": self.nodes,
            "gpus": self.gpus,
        }

    def close(self) -> None:
        import ray

        ray.shutdown()


def xlarge_plan() -> Any:
    return plan_run(run_config("falcon_180b", "tp4_pp2", "xlarge"))


def test_a_plan_over_two_nodes_needs_them_and_says_how(monkeypatch):
    for key in ("SLURM_JOB_ID", "SLURM_JOB_NODELIST", "SLURM_NODELIST", "SLURM_NODEID"):
        monkeypatch.delenv(key, raising=False)
    plan = xlarge_plan()
    assert spans_nodes(plan) and plan.nodes_needed == 2
    (problem,) = [p for p in multinode_problems(plan) if "node(s)" in p]
    assert "spans 2 nodes, but this process is on 1 node(s)" in problem
    assert "hydra/launcher=slurm" in problem and "ray.address=" in problem
    # inside a SLURM allocation of two nodes, or with a cluster to join: nothing to refuse
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    monkeypatch.setenv("SLURM_JOB_NODELIST", "gpu[01-02]")
    monkeypatch.setenv("SLURM_NODEID", "0")
    assert not [p for p in multinode_problems(plan) if "node(s)" in p]
    monkeypatch.delenv("SLURM_JOB_NODELIST")
    with_address = replace(plan, ray_address="head:6379")
    assert not [p for p in multinode_problems(with_address) if "node(s)" in p]
    # ray.address reaches the plan (the engines read the plan, never the config)
    run = run_config("falcon_180b", "tp4_pp2", "xlarge")
    joined = plan_run(replace(run, ray=replace(run.ray, address="head:6379", wait_timeout_s=9)))
    assert (joined.ray_address, joined.ray_wait_timeout_s) == ("head:6379", 9)
    # the HF engine cannot span nodes as one engine
    hf = replace(with_address, engine="hf", executor_backend="none")
    assert any("only vLLM's Ray executor" in p for p in multinode_problems(hf))
    # one node: nothing to say
    one = plan_run(run_config("falcon_180b", "tp4_pp2", "large"))
    assert not spans_nodes(one) and multinode_problems(one) == []


@pytest.mark.ray
def test_the_engine_joins_the_cluster_once_it_has_the_nodes_and_gpus():
    import ray
    from ray.cluster_utils import Cluster

    from harness.engines.base import RemoteEngine
    from harness.engines.process.engine import EngineProcess
    from harness.engines.ray.multinode import ClusteredEngine

    plan = xlarge_plan()
    before = os.environ.get("RAY_ADDRESS")
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "num_gpus": 4})
    try:
        cluster.add_node(num_cpus=1, num_gpus=4)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address)
        address = ray.get_runtime_context().gcs_address
        called: list[str] = []
        engine = ClusteredEngine(
            plan,
            build=lambda: EngineProcess("tests.engines.test_multinode:RayJoiningEngine"),
            on_cluster=lambda: called.append(os.environ["RAY_ADDRESS"]),
        )
        try:
            facts = engine.describe()
            # the engine's own process joined this cluster, and saw both nodes and 8 GPUs
            assert (facts["address"], facts["nodes_seen"], facts["gpus"]) == (address, 2, 8.0)
            assert facts["ray_cluster"] == "existing" and len(facts["nodes"]) == 2
            assert called == [address], "telemetry's hook ran once, before the engine was built"
            assert engine.builds == 1
            assert isinstance(engine, RemoteEngine)
            engine.check()  # the health check reaches the engine's process
        finally:
            engine.close()
        assert os.environ.get("RAY_ADDRESS") == before
        assert len([n for n in ray.nodes() if n["Alive"]]) == 2, "a joined cluster is left up"
    finally:
        ray.shutdown()
        cluster.shutdown()


@pytest.mark.ray
def test_a_cluster_short_of_gpus_is_named_before_the_engine_is_built():
    import ray
    from ray.cluster_utils import Cluster

    from harness.engines.ray.cluster import ClusterError
    from harness.engines.ray.multinode import ClusteredEngine

    plan = replace(xlarge_plan(), ray_wait_timeout_s=2)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "num_gpus": 4})
    built: list[int] = []
    try:
        ray.init(address=cluster.address)
        with pytest.raises(
            ClusterError, match=r"8 GPU\(s\) on 2 node\(s\): missing 4 GPU\(s\), 1 node\(s\)"
        ):
            ClusteredEngine(plan, build=lambda: built.append(1))  # type: ignore[arg-type,return-value]
        assert built == []
    finally:
        ray.shutdown()
        cluster.shutdown()
