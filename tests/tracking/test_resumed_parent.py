"""A resumed run (the same ``output_dir``, the same config) is the same run in MLflow too: its
attempts share one parent run, reopened and completed, not one parent per attempt under one
``run_uid`` (issue 35). Against a real MLflow server."""

from __future__ import annotations

import pytest

from tests.tracking.test_tracking_server import serve_mlflow

pytestmark = pytest.mark.slow  # a real mlflow server


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    yield from serve_mlflow(tmp_path_factory.mktemp("mlflow_resume"))


def attempt(config, uid, datasets, resume, status, own_process):
    """One attempt of run ``uid``: its parent, a child per dataset with a metric, then ended
    with ``status`` (KILLED: a killed attempt; its in-flight child killed with it)."""
    from harness.tracking import Tracker

    tracker = Tracker(config, uid=uid, own_process=own_process, resume=resume)
    tracker.start("tiny_char/single arith_mc,reverse_gen " + uid[:6], {"seed": "1"}, {})
    for name, value in datasets.items():
        tracker.child(name, {"limit": "4"}, {})
        if value is not None:
            tracker.log_metrics({"acc": value}, run=name)
            tracker.end(run=name)
    tracker.end(status=status)
    tracker.close()
    return tracker


@pytest.mark.parametrize("own_process", [False, True])
def test_a_resumed_run_reopens_its_parent_and_children(server, compose_cfg, own_process):
    from mlflow.tracking import MlflowClient

    from harness.config.schema import to_run_config
    from harness.tracking.names import RUN_UID_TAG

    experiment = f"resume_{own_process}"
    config = to_run_config(
        compose_cfg(
            "tracking=server", f"tracking.uri={server}", f"tracking.experiment={experiment}"
        )
    ).tracking
    uid = "a1b2c3d4" * 4
    # killed while reverse_gen ran (its child open, no metric)
    first = attempt(
        config, uid, {"arith_mc": 0.5, "reverse_gen": None}, False, "KILLED", own_process
    )
    # resumed: arith_mc's child again (stored result), reverse_gen evaluated this time
    second = attempt(
        config, uid, {"arith_mc": 0.5, "reverse_gen": 1.0}, True, "FINISHED", own_process
    )
    assert second.parent_id == first.parent_id and not second.failed

    client = MlflowClient(tracking_uri=server)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], filter_string=f"tags.`{RUN_UID_TAG}` = '{uid}'")
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert [p.info.run_id for p in parents] == [first.parent_id]  # one parent, not two
    assert parents[0].info.status == "FINISHED"
    children = {r.info.run_name: r for r in runs if r not in parents}
    assert sorted(children) == ["arith_mc", "reverse_gen"]  # no child twice
    assert all(c.data.tags["mlflow.parentRunId"] == first.parent_id for c in children.values())
    assert {n: c.info.status for n, c in children.items()} == {
        "arith_mc": "FINISHED",
        "reverse_gen": "FINISHED",
    }
    assert children["reverse_gen"].data.metrics == {"acc": 1.0}
    history = client.get_metric_history(children["arith_mc"].info.run_id, "acc")
    assert len(history) == 1  # what the reopened run held is not logged again
