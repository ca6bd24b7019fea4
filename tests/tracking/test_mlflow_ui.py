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

Per-sample tables (``samples/<dataset>.table.json``, tagged ``mlflow.loggedArtifacts``): a run
page's Artifacts tab shows a logged table as a table ("View as table", checked by default), and
the runs page's "Artifact evaluation" mode (``compareRunsMode=ARTIFACT``) lines up the visible
runs' tables by their first column, showing each run's ``output`` column. The visible runs are
the parents (children fold under them), so the parent holds each dataset's table too.
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
            "log_samples=true",
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
    yield {"url": url, "link": links[0], "run_link": run_link, "tmp": tmp, "run": tmp / "run"}
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


def dom_and_screenshot(url: str, out: Path, wait_ms: int = 20000) -> str:
    """The page's DOM, and a PNG of it at ``out`` for a person to look at, from one chromium."""
    args = [f"--virtual-time-budget={wait_ms}", "--window-size=2000,900", f"--screenshot={out}"]
    proc = _run([*args, "--dump-dom", url], 120)
    assert proc.returncode == 0, f"chromium {url} failed: {proc.stderr[-2000:]}"
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return proc.stdout


def table_rows(client, run_id: str, dataset: str, dst: Path) -> list[dict]:
    import json

    local = client.download_artifacts(run_id, f"samples/{dataset}.table.json", str(dst))
    table = json.loads(Path(local).read_text(encoding="utf-8"))
    return [dict(zip(table["columns"], r, strict=True)) for r in table["data"]]


def test_the_per_sample_table_is_read_over_http_and_shown_in_mlflow_ui(ui_run):
    """Logged to a real server: a dataset's table reads back through ``MlflowClient`` row for row
    as the run's samples file (documents, answers, scores), on the child run and the parent; the
    table link opens it as a table in MLflow's UI, and the compare link lines the runs up sample
    by sample with each run's answer."""
    import gzip
    import json

    from harness.tracking import samples_compare_link, samples_table_link

    client, exp = experiment(ui_run["url"])
    parent_id = ui_run["run_link"].split("/runs/")[1].split("?")[0]
    data = gzip.decompress((ui_run["run"] / "samples" / "reverse_gen.jsonl.gz").read_bytes())
    records = [json.loads(line) for line in data.decode().splitlines()]
    (child,) = client.search_runs([exp.experiment_id], "attributes.run_name = 'reverse_gen'")
    for run_id in (child.info.run_id, parent_id):
        rows = table_rows(client, run_id, "reverse_gen", ui_run["tmp"] / run_id)
        assert [r["doc_id"] for r in rows] == [r["doc_id"] for r in records]
        assert [r["output"] for r in rows] == [r["filtered_resps"][0] for r in records]
        assert [r["exact_match"] for r in rows] == [r["exact_match"] for r in records]
    answer = records[0]["filtered_resps"][0]
    assert answer  # the bundled model answers reverse_gen: a text to find on the page

    link = samples_table_link(ui_run["url"], exp.experiment_id, child.info.run_id, "reverse_gen")
    assert link is not None
    text = page_text(dump_dom(link, wait_ms=20000))
    assert "samples/reverse_gen.table.json" in text and "View as table" in text, text[:3000]
    columns = "sample prompt target output exact_match task doc_id filter request_hash"
    assert columns in text, text[:3000]  # the table's header, in order
    assert f" reverse_gen/0 {records[0]['doc']['query']} {records[0]['target']} {answer} " in text

    both = samples_compare_link(ui_run["url"], exp.experiment_id, [parent_id])
    assert both is not None
    out = ui_run["tmp"] / "mlflow_samples.png"
    text = page_text(dom_and_screenshot(both, out))
    shutil.copy(out, Path("/tmp/mlflow_samples.png"))  # for a person to look at
    # The view opens on the first table the runs hold; each row is a sample, each run's cell
    # its answer.
    first = json.loads(client.get_run(parent_id).data.tags["mlflow.loggedArtifacts"])[0]["path"]
    dataset = first.removeprefix("samples/").removesuffix(".table.json")
    row = table_rows(client, parent_id, dataset, ui_run["tmp"] / "compare")[0]
    assert f"Table: {first} Group by: sample Compare: output" in text, text[:3000]
    assert f" {row['sample']} {row['output']} " in text, text[:3000]
