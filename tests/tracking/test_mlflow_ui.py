"""MLflow's own UI opens on harness's runs, checked in a real headless chromium.

What MLflow 3.17.2's UI does (read from its bundle, mlflow/server/js/build/static/js): the
experiment page picks GenAI pages (overview, traces) or model-training pages (the runs table) from
``workflowType``, taken from the URL, else the browser's local storage, GenAI by default; the
``mlflow.experimentKind`` experiment tag is no longer read for that (the flag that would read it
is compiled to true). The runs table's columns come from local storage (defaults: Source,
Models, Dataset), unless the URL names a shared view (``viewStateShareKey``) whose state is an
experiment tag ``mlflow.sharedViewState.<key>``. So harness tags the experiment's kind, stores a
shared view with each dataset's headline metric, load and total time, duration and status, and
prints the URL that opens both.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from tests.browser import _run, screenshot
from tests.conftest import run_harness
from tests.tracking.test_tracking_server import serve_mlflow

pytestmark = [pytest.mark.slow, pytest.mark.browser]

TASKS = ["arith_mc", "reverse_gen"]


def dump_dom(url: str, wait_ms: int = 20000) -> str:
    """``tests.browser.dump_dom`` in a window wide enough for every column: the runs table
    renders only the columns in view."""
    proc = _run(
        [f"--virtual-time-budget={wait_ms}", "--window-size=2400,1000", "--dump-dom", url], 120
    )
    assert proc.returncode == 0, f"chromium --dump-dom {url} failed: {proc.stderr[-2000:]}"
    return proc.stdout


def page_text(dom: str) -> str:
    """The words a user sees: the DOM without scripts, styles and tags."""
    dom = re.sub(r"<(script|style)[^>]*>.*?</\1>", " ", dom, flags=re.S)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom))


@pytest.fixture(scope="module")
def ui_run(tmp_path_factory):
    """A run of the bundled model logged over HTTP to a real server; its URL and printed link."""
    server = serve_mlflow(tmp_path_factory.mktemp("mlflow_ui_store"))
    url = next(server)
    tmp = tmp_path_factory.mktemp("ui_run")
    proc = run_harness(
        [
            f"dataset=[{','.join(TASKS)}]",
            "dataset.arith_mc.limit=20",
            "dataset.reverse_gen.limit=10",
            "tracking=server",
            f"tracking.uri={url}",
            f"output_dir={tmp / 'run'}",
        ],
        tmp,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    links = re.findall(r"^runs table: (\S+)$", proc.stdout, re.M)
    assert len(links) == 1, proc.stdout[-3000:]
    (run_link,) = re.findall(r"^this run: (\S+)$", proc.stdout, re.M)
    yield {"url": url, "link": links[0], "run_link": run_link, "tmp": tmp}
    next(server, None)


def experiment(url: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=url)
    return client, client.get_experiment_by_name("harness")


def test_experiment_is_marked_model_development(ui_run):
    _, exp = experiment(ui_run["url"])
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    view = exp.tags["mlflow.sharedViewState.harness"]
    for column in ("arith_mc/acc", "reverse_gen/exact_match", "load_time_s", "total_time_s"):
        assert f"metrics.`{column}`" in view
    assert ui_run["link"] == (
        f"{ui_run['url']}/#/experiments/{exp.experiment_id}/runs"
        "?workflowType=machine_learning&viewStateShareKey=harness"
    )


def test_existing_experiment_without_the_kind_gets_it(ui_run):
    from harness.config.schema import TrackingConfig
    from harness.tracking import Tracker

    client, _ = experiment(ui_run["url"])
    old = client.create_experiment("made_elsewhere")
    assert "mlflow.experimentKind" not in client.get_experiment(old).tags
    tracker = Tracker(TrackingConfig(uri=ui_run["url"], experiment="made_elsewhere"))
    tracker.start("probe", params={}, tags={})
    tracker.end()
    tracker.close()
    assert not tracker.failed
    tags = client.get_experiment(old).tags
    assert tags["mlflow.experimentKind"] == "custom_model_development"


def test_printed_link_opens_the_runs_table_with_harness_columns(ui_run):
    text = page_text(dump_dom(ui_run["link"], wait_ms=20000))
    assert "tiny_char/single" in text, text[:3000]
    columns = ("arith_mc/acc", "reverse_gen/exact_match", "load_time_s", "total_time_s")
    for column in (*columns, "Duration", "status"):
        assert column in text, f"{column!r} not a column of the runs table: {text[:3000]}"
    assert "No data available" not in text  # the GenAI overview's empty charts
    png = screenshot(ui_run["link"], ui_run["tmp"] / "mlflow_ui.png", "2000,900", wait_ms=20000)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    shutil.copy(png, Path("/tmp/mlflow_ui.png"))  # for a person to look at


def test_without_the_shared_view_the_link_shows_no_runs_table(ui_run):
    """The control: with the view tag removed the same link shows none of harness's columns (MLflow
    says the view does not exist and falls back to the GenAI overview), so the test above sees
    the tag's effect."""
    client, exp = experiment(ui_run["url"])
    view = exp.tags["mlflow.sharedViewState.harness"]
    client.delete_experiment_tag(exp.experiment_id, "mlflow.sharedViewState.harness")
    try:
        text = page_text(dump_dom(ui_run["link"], wait_ms=20000))
    finally:
        client.set_experiment_tag(exp.experiment_id, "mlflow.sharedViewState.harness", view)
    assert 'share key "harness" does not exist' in text, text[:3000]
    assert "arith_mc/acc" not in text and "load_time_s" not in text


def test_plain_experiment_url_opens_genai_pages_in_mlflow_3_17(ui_run):
    """Why harness's link names ``workflowType``: without it MLflow 3.17 opens the GenAI overview
    even for an experiment tagged ``custom_model_development`` (if a later MLflow reads the tag
    again, this test says so)."""
    _, exp = experiment(ui_run["url"])
    text = page_text(dump_dom(f"{ui_run['url']}/#/experiments/{exp.experiment_id}", 20000))
    assert "No data available" in text and "tiny_char/single" not in text, text[:3000]


def test_the_printed_run_link_opens_the_classic_run_page(ui_run):
    """The run's own link opens MLflow's model-training run page (under "Runs", the model-training
    side bar), not GenAI's (under "Evaluations", a side bar of Observability, Sessions, Judges),
    which the same page without ``workflowType`` shows; the parent's name carries its datasets."""
    link = ui_run["run_link"]
    assert link.endswith("?workflowType=machine_learning"), link
    name = "tiny_char/single arith_mc,reverse_gen "
    text = page_text(dump_dom(link, wait_ms=20000))
    assert f"harness Runs {name}" in text and "arith_mc/acc" in text, text[:3000]
    assert "Observability" not in text and "Judges" not in text, text[:3000]
    plain = page_text(dump_dom(link.split("?")[0], wait_ms=20000))  # the control
    assert f"harness Evaluations {name}" in plain and "Observability" in plain, plain[:3000]
