"""``python -m harness.report`` on a real MLflow store filled by real harness runs.

Two models x three bundled datasets: ``tiny_char`` and the same bundled checkpoint loaded as any
Hugging Face folder (``model=hf``) under the name ``tiny_copy``, with smaller limits so that its
scores differ. A second model from the same files costs no training and no download; a second
strategy would mean vLLM or Ray, tens of seconds more. ``tiny_copy`` runs on fake GPUs (the only
mock: NVML) so that energy and peak memory are logged; ``tiny_char`` is then run again, every
dataset resumed from the result store, so the report must pick the newer of two runs.
"""

from __future__ import annotations

import base64
import csv
import json
import os
import re
import struct
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tests.browser import dump_dom
from tests.conftest import FAKE_NVML, TINY_MODEL, run_harness, run_module
from tests.tracking.test_tracking_server import free_port, serve_mlflow

DATASETS = ["arith_mc", "reverse_gen", "story_ppl"]
HEADLINES = {"arith_mc": "acc", "reverse_gen": "exact_match", "story_ppl": "word_perplexity"}
LIMITS = {"tiny_char": (20, 10, 10), "tiny_copy": (12, 6, 6)}


def _args(model: str) -> list[str]:
    limits = [f"dataset.{ds}.limit={n}" for ds, n in zip(DATASETS, LIMITS[model], strict=True)]
    chosen = (
        ["model=tiny_char"]
        if model == "tiny_char"
        else ["model=hf", f"model.pretrained={TINY_MODEL}", "model.name=tiny_copy"]
    )
    return [*chosen, f"dataset=[{','.join(DATASETS)}]", *limits, "outputs_root=outputs"]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A folder whose outputs/mlflow.db (the default local store) holds the runs."""
    tmp = tmp_path_factory.mktemp("report_store")
    (tmp / "nvml.json").write_text(
        json.dumps(
            {
                "gpus": [
                    {
                        "name": "NVIDIA H100 80GB HBM3",
                        "total_mib": 81559,
                        "used_mib": [1000 + 50 * i for i in range(400)],
                        "util": [40, 90, 60],
                        "power_w": [120, 300, 250],
                        "energy_j": [50.0 * i for i in range(400)],
                    }
                ]
            }
        )
    )
    first = run_harness(_args("tiny_char"), tmp)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PYTHONPATH", os.pathsep.join([str(FAKE_NVML), os.environ.get("PYTHONPATH", "")]))
        mp.setenv("FAKE_NVML_SCRIPT", str(tmp / "nvml.json"))
        copy = run_harness(
            [*_args("tiny_copy"), "strategy.device=cpu", "telemetry.interval_s=0.2"], tmp
        )
    assert copy.returncode == 0, copy.stdout[-2000:] + copy.stderr[-2000:]
    again = run_harness(_args("tiny_char"), tmp)  # every dataset from the result store
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    assert "no model to load" in again.stdout
    return tmp


def test_headline_metric_per_dataset():
    """lm-eval's metric names as harness logs them (multiple choice, gsm8k's filters,
    perplexity) next to harness's own timing and telemetry metrics."""
    from harness.record.metrics import headline, stderr_name

    ours = {"eval_time_s", "requests", "requests_per_s", "tokens_per_s", "tokens_per_joule"}
    ours |= {"telemetry/energy_j", "telemetry/peak_memory_gib", "gpu0/peak_memory_gib"}
    assert headline(ours | {"acc", "acc_stderr", "acc_norm", "acc_norm_stderr"}) == "acc"
    gsm8k = {"exact_match/strict-match", "exact_match_stderr/strict-match"}
    gsm8k |= {"exact_match/flexible-extract", "exact_match_stderr/flexible-extract"}
    assert headline(ours | gsm8k) == "exact_match/strict-match"
    assert headline({"exact_match/mine", "exact_match_stderr/mine"}) == "exact_match/mine"
    assert headline(ours | {"bits_per_byte", "byte_perplexity", "word_perplexity"}) == (
        "word_perplexity"
    )
    assert headline(ours | {"rouge1", "rouge1_stderr"}) == "rouge1"
    assert headline(ours) is None  # a dataset that failed logs timing only
    assert stderr_name("exact_match/strict-match") == "exact_match_stderr/strict-match"


def mlflow_runs(tmp: Path) -> tuple[dict[str, list], dict[str, dict]]:
    """Parents by model (newest first) and each parent's children by dataset, read with
    MlflowClient."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp / 'outputs' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("harness")
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"])
    parents: dict[str, list] = {}
    children: dict[str, dict] = {}
    for r in runs:
        parent_id = r.data.tags.get("mlflow.parentRunId")
        if parent_id is None:
            parents.setdefault(r.data.tags["model"], []).append(r)
        else:
            children.setdefault(parent_id, {})[r.info.run_name] = r
    return parents, children


def markdown_rows(text: str) -> list[list[str]]:
    lines = [ln for ln in text.splitlines() if ln.startswith("| ")]
    return [[c.strip() for c in ln.strip("| ").split(" | ")] for ln in lines]


def g4(value: float) -> str:
    return f"{value:.4g}"


@pytest.fixture(scope="module")
def report(store):
    """The report with every default: the local store and experiment, outputs/reports/<time>/."""
    proc = run_module("harness.report", cwd=store)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    (out,) = (store / "outputs" / "reports").iterdir()
    return proc, out


@pytest.mark.slow
def test_cells_equal_the_runs_metrics(store, report):
    proc, out = report
    parents, children = mlflow_runs(store)
    assert sorted(parents) == ["tiny_char", "tiny_copy"] and len(parents["tiny_char"]) == 2
    rows = {r["model"]: r for r in csv.DictReader((out / "report.csv").open())}
    assert sorted(rows) == ["tiny_char", "tiny_copy"]
    md = {r[1]: r for r in markdown_rows((out / "report.md").read_text())[2:]}
    md_head = markdown_rows((out / "report.md").read_text())[0]
    assert md_head[:4] == ["#", "model", "strategy", "status"]  # one model each: no variant
    assert md_head[4:7] == [f"{ds} {HEADLINES[ds]}" for ds in DATASETS]
    distinct = set()
    for model, row in rows.items():
        parent = parents[model][0]  # the newest run of the model
        assert row["run_id"] == parent.info.run_id
        assert row["older_runs"] == str(len(parents[model]) - 1)
        kids = children[parent.info.run_id]
        assert sorted(kids) == sorted(DATASETS)
        for i, ds in enumerate(DATASETS):
            metric = HEADLINES[ds]
            value = kids[ds].data.metrics[metric]
            assert float(row[f"{ds}/{metric}"]) == value
            distinct.add((ds, value))
            stderr = kids[ds].data.metrics.get(f"{metric}_stderr")
            expected = g4(value) if stderr is None else f"{g4(value)} ± {g4(stderr)}"
            documents = LIMITS[model][i]  # each limit is under its dataset's size
            assert md[model][4 + i] == f"{expected} (n={documents})"
            assert row[f"{ds}/{metric}_stderr"] == ("" if stderr is None else repr(stderr))
            assert row[f"{ds}/n"] == str(documents)
        p = parent.data.metrics
        assert float(row["total_time_s"]) == p["total_time_s"]
        assert md[model][md_head.index("total s")] == g4(p["total_time_s"])
        if model == "tiny_char":  # the resumed run loaded nothing
            assert "load_time_s" not in p and row["load_time_s"] == ""
        else:
            assert float(row["load_time_s"]) == p["load_time_s"]
        k = [kids[ds].data.metrics for ds in DATASETS]
        seconds = sum(m["eval_time_s"] for m in k)
        assert float(row["requests_per_s"]) == pytest.approx(
            sum(m["requests"] for m in k) / seconds, rel=1e-12
        )
        assert float(row["tokens_per_s"]) == pytest.approx(
            sum(m["tokens_per_s"] * m["eval_time_s"] for m in k) / seconds, rel=1e-12
        )
    # the runs differ in their scores, so a row given another run's cells would show
    assert len(distinct) > len(DATASETS)
    # energy and peak memory: logged for the run on (fake) GPUs only
    copy = parents["tiny_copy"][0]
    kids = children[copy.info.run_id]
    energy = copy.data.metrics["load/telemetry/energy_j"] + sum(
        kids[ds].data.metrics["telemetry/energy_j"] for ds in DATASETS
    )
    assert float(rows["tiny_copy"]["energy_j"]) == pytest.approx(energy, rel=1e-12)
    peak = max(
        [copy.data.metrics["load/telemetry/peak_memory_gib"]]
        + [kids[ds].data.metrics["telemetry/peak_memory_gib"] for ds in DATASETS]
    )
    assert float(rows["tiny_copy"]["peak_memory_gib"]) == peak
    assert rows["tiny_char"]["energy_j"] == "" and md["tiny_char"][-2:] == ["-", "-"]
    # what was left out is stated, and the table and the paths are printed
    older = parents["tiny_char"][1].info.run_id
    assert f"older not shown: {older}" in (out / "report.md").read_text()
    assert "| tiny_copy | single | FINISHED |" in proc.stdout
    for name in ("report.md", "report.csv", "report.html", "chart.png"):
        assert f"wrote {out / name}" in proc.stdout


class _Dom(HTMLParser):
    """The body's attributes and the report table's cells, row by row (a variant's cell as it
    shows before a click: its summary, not the full settings it opens on)."""

    def __init__(self) -> None:
        super().__init__()
        self.body: dict[str, str | None] = {}
        self.rows: list[list[str]] = []
        self.img: dict[str, str | None] = {}
        self._cell: list[str] | None = None
        self._in_body = False
        self._table: str | None = None
        self._folded = False

    def handle_starttag(self, tag, attrs):
        if tag == "body":
            self.body = dict(attrs)
        elif tag == "table":
            self._table = dict(attrs).get("id")
        elif tag == "div" and dict(attrs).get("class") == "full":
            self._folded = True
        elif tag == "tbody" and self._table == "report":
            self._in_body = True
        elif tag == "tr" and self._in_body:
            self.rows.append([])
        elif tag == "td" and self._in_body:
            self._cell = []
        elif tag == "img":
            self.img = dict(attrs)

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None:
            self.rows[-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tbody":
            self._in_body = False
        elif tag == "div":
            self._folded = False

    def handle_data(self, data):
        if self._cell is not None and not self._folded:
            self._cell.append(data)


PROBE = """<script>
// Once the page has loaded (every image with it), the chart's size as the browser decoded it.
function probe() {
  const chart = document.getElementById("chart");
  document.body.dataset.chartWidth = chart.naturalWidth;
  document.body.dataset.chartHeight = chart.naturalHeight;
}
if (document.readyState === "complete") probe(); else window.addEventListener("load", probe);
</script>"""


@pytest.mark.slow
@pytest.mark.browser
def test_html_page_renders_in_chromium(report, tmp_path):
    _, out = report
    page = (out / "report.html").read_text()
    assert "http://" not in page and "https://" not in page and 'src="data:image/png' in page
    # The page as written plus a probe that records whether the browser decoded the chart.
    probe = tmp_path / "probe.html"
    probe.write_text(page.replace("</body>", PROBE + "\n</body>"))
    dom = _Dom()
    dom.feed(dump_dom(probe.as_uri(), wait_ms=5000))
    png = (out / "chart.png").read_bytes()
    width, height = struct.unpack(">II", png[16:24])  # the PNG's IHDR
    assert (dom.body.get("data-chart-width"), dom.body.get("data-chart-height")) == (
        str(width),
        str(height),
    ), dom.body
    assert base64.b64decode(dom.img["src"].partition(",")[2]) == png
    md_rows = markdown_rows((out / "report.md").read_text())[2:]
    assert dom.rows == md_rows  # the same cells, every one rendered in the DOM


@pytest.mark.slow
def test_filters_and_explicit_runs(store, report, capsys):
    from harness.report.cli import main

    parents, _ = mlflow_runs(store)
    older = parents["tiny_char"][1].info.run_id
    out = store / "filtered"
    with pytest.raises(SystemExit) as exit_:
        main(["--tracking-uri", f"sqlite:///{store / 'outputs/mlflow.db'}", "--runs", older,
              "--out", str(out)])  # fmt: skip
    assert exit_.value.code == 0
    (row,) = csv.DictReader((out / "report.csv").open())
    assert row["run_id"] == older and row["older_runs"] == "0"
    assert "| tiny_char | single |" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:
        main(["--tracking-uri", f"sqlite:///{store / 'outputs/mlflow.db'}", "--model", "tiny_copy",
              "--out", str(out)])  # fmt: skip
    assert exit_.value.code == 0
    (row,) = csv.DictReader((out / "report.csv").open())
    assert row["model"] == "tiny_copy"
    printed = capsys.readouterr().out
    assert "| tiny_copy | single |" in printed and "tiny_char" not in printed


def _fails(capsys, *args: str) -> str:
    from harness.report.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(list(args))
    err = capsys.readouterr().err
    assert exit_.value.code == 2, err
    assert "Traceback" not in err and "Fix:" in err, err
    return err


@pytest.mark.slow
def test_bad_input_is_explained(store, tmp_path, capsys, monkeypatch):
    from mlflow.tracking import MlflowClient

    db = f"sqlite:///{store / 'outputs' / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # restored after the test
    err = _fails(capsys, "--tracking-uri", db, "--experiment", "harnes")
    assert "experiment 'harnes' does not exist" in err and "Did you mean 'harness'" in err
    MlflowClient(tracking_uri=db).create_experiment("empty")
    err = _fails(capsys, "--tracking-uri", db, "--experiment", "empty")
    assert "experiment 'empty'" in err and "holds no runs" in err
    err = _fails(capsys, "--tracking-uri", db, "--model", "llama")
    assert "matches --model llama" in err and "tiny_char/single" in err
    err = _fails(capsys, "--tracking-uri", db, "--runs", "0123abc")
    assert "0123abc are not parent runs" in err
    missing = tmp_path / "nowhere" / "mlflow.db"
    err = _fails(capsys, "--tracking-uri", f"sqlite:///{missing}")
    assert f"{missing} does not exist" in err and not missing.parent.exists()
    err = _fails(capsys, "--tracking-uri", f"http://127.0.0.1:{free_port()}")
    assert re.search(r"cannot read the MLflow store at tracking URI http://127\.0\.0\.1:\d+", err)


@pytest.mark.slow
def test_report_over_http_equals_the_local_one(store, report, tmp_path, monkeypatch):
    """The same store served by a real `mlflow server`: read over its REST API, the same table."""
    from harness.report.cli import main

    _, local = report
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")  # restored after the test
    server = serve_mlflow(store / "outputs")  # serves outputs/mlflow.db
    url = next(server)
    try:
        with pytest.raises(SystemExit) as exit_:
            main(["--tracking-uri", url, "--out", str(tmp_path / "http")])
    finally:
        next(server, None)
    assert exit_.value.code == 0
    assert (tmp_path / "http" / "report.csv").read_text() == (local / "report.csv").read_text()
    over_http = (tmp_path / "http" / "report.md").read_text()
    assert f"Store: `{url}`" in over_http
    assert markdown_rows(over_http) == markdown_rows((local / "report.md").read_text())
