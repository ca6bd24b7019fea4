"""The side-by-side report at a real user's scale (issue 36): 20 runs of one model and strategy
over different dataset lists, logged into a real MLflow store through harness's own tracking
calls (tests/report/logged_runs.py), the checkpoint typed as two relative paths.

The report must name in each variant only what differs among the runs that have it (never a
dataset another run lacks), keep every variant under 200 characters with the full settings a
click or a CSV column away, give each figure its document count, show the same checkpoint typed
two ways as one row, and draw a chart whose legend holds every run, with a real 0 drawn apart
from a missing figure.
"""

from __future__ import annotations

import csv
import shutil
import struct
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.browser import dump_dom
from tests.conftest import TINY_MODEL
from tests.report.logged_runs import HEADLINES, Dataset, Run, log_run

pytestmark = pytest.mark.slow  # 21 runs logged through harness's tracking: ~25 s

NAMES = list(HEADLINES)
LIMITS = (5, 10, 20, 50)


def plan_runs() -> list[Run]:
    """20 runs, each over four of six datasets (a different four in turn), each with its own
    limit, few-shot and seed; run 1 scores a real 0 on arith_mc, run 2's arith_mc fails, run 0
    has no arith_mc; then run 0 again with its checkpoint typed another way."""
    runs = []
    for i in range(20):
        chosen = [n for j, n in enumerate(NAMES) if (i + j) % 3 != 0]
        datasets = {
            n: Dataset(LIMITS[i % 4], [0, 2][i % 2], round(0.3 + 0.03 * i + 0.01 * j, 4))
            for j, n in enumerate(chosen)
        }
        runs.append(Run(["./ck", "sub/../ck"][i % 2], datasets, seed=i))
    runs[1].datasets["arith_mc"].value = 0.0
    runs[2].datasets["arith_mc"].value = None
    again = Run("sub/../ck", runs[0].datasets, seed=0)
    return [*runs, again]


@pytest.fixture(scope="module")
def scale(tmp_path_factory):
    """The store, the runs as planned, and the report written from it."""
    from harness.report.collect import collect
    from harness.report.render import write
    from harness.report.table import build_table

    tmp = tmp_path_factory.mktemp("scale")
    shutil.copytree(TINY_MODEL, tmp / "ck")
    (tmp / "sub").mkdir()
    shm = Path("/dev/shm")  # the store in memory where there is one: 2.5x quicker to write
    with tempfile.TemporaryDirectory(dir=shm if shm.is_dir() else tmp) as store:
        uri = f"sqlite:///{store}/mlflow.db"
        runs = plan_runs()
        for i, run in enumerate(runs):
            log_run(run, uri, cwd=tmp, folder=tmp / "runs" / str(i))
        collection = collect(uri, "harness")
        table = build_table(collection)
        written = write(collection, table, tmp / "report")
        yield SimpleNamespace(runs=runs, collection=collection, table=table, written=written)


def test_each_variant_names_only_what_differs(scale):
    runs, collection, written = scale.runs, scale.collection, scale.written
    rows = list(csv.DictReader(written.csv.open()))
    assert len(rows) == 20 and len(collection.runs) == 20
    by_seed = {r.params["seed"]: r for r in collection.runs}
    for i, run in enumerate(runs[:20]):
        row = by_seed[str(i)]
        limit, fewshot = LIMITS[i % 4], [0, 2][i % 2]
        assert row.variant == f"limit={limit}, fewshot={fewshot}, seed={i}"
        assert all(name not in row.variant for name in NAMES)  # no dataset another run lacks
        full = row.full_variant.split(", ")
        assert f"seed={i}" in full and f"dataset.{next(iter(run.datasets))}.limit={limit}.0" in full
        assert not any("pretrained" in part or "None" in part for part in full)
    assert max(len(r["variant"]) for r in rows) <= 200
    assert {r["settings"] for r in rows} == {r.full_variant for r in collection.runs}
    page = written.html.read_text()
    first = collection.runs[0]
    assert f'title="{first.full_variant}"><details><summary>{first.variant}</summary>' in page


def test_the_same_checkpoint_typed_two_ways_is_one_row(scale):
    collection = scale.collection
    (row,) = [r for r in collection.runs if r.params["seed"] == "0"]
    assert row.params["model.pretrained"] == "sub/../ck" and len(row.older) == 1  # the latest
    checkpoints = {(r.checkpoint, r.checkpoint_hash) for r in collection.runs}
    assert len(checkpoints) == 1
    (path, digest) = checkpoints.pop()
    assert path.endswith("/ck") and ".." not in path and len(digest) == 16
    typed = {r.params["model.pretrained"] for r in collection.runs}
    assert typed == {"./ck", "sub/../ck"}  # typed two ways, one checkpoint, no variant of it


def test_every_figure_has_its_document_count(scale):
    runs, collection, written = scale.runs, scale.collection, scale.written
    rows = {r["run_id"]: r for r in csv.DictReader(written.csv.open())}
    md = written.markdown.read_text()
    for run in collection.runs:
        i = int(run.params["seed"])
        for name in NAMES:
            d = runs[i].datasets.get(name)
            n = rows[run.run_id][f"{name}/n"]
            if d is None or d.value is None:
                assert n == ""
            else:
                assert n == str(d.limit)
    line = next(ln for ln in md.splitlines() if ", seed=1 |" in ln)
    assert f"| 0 ± 0.05 (n={LIMITS[1]}) |" in line  # a real 0, with its documents
    assert "| FAILED |" in next(ln for ln in md.splitlines() if ", seed=2 |" in ln)


def test_chart_legend_holds_every_run_and_zero_is_not_missing(scale):
    from harness.report.chart import chart_figure, legend_label, run_colors, run_marker

    table, written = scale.table, scale.written
    fig = chart_figure(table)
    fig.canvas.draw()
    (legend,) = fig.legends
    texts = [t.get_text() for t in legend.get_texts()]
    assert texts[:-1] == [legend_label(i, r.run.label) for i, r in enumerate(table.rows)]
    assert texts[-1].startswith("n/a")
    box, whole = legend.get_window_extent(), fig.bbox
    assert whole.x0 <= box.x0 and box.x1 <= whole.x1 and whole.y0 <= box.y0 and box.y1 <= whole.y1
    png = written.chart.read_bytes()
    width, height = struct.unpack(">II", png[16:24])
    assert width >= box.width and height >= box.height + 3 * 100  # the legend and the panels
    looks = {(tuple(c), run_marker(i)) for i, c in enumerate(run_colors(20))}
    assert len(looks) == 20 and len({tuple(c) for c in run_colors(20)}) == 20
    gids = {a.get_gid(): a for ax in fig.axes for a in [*ax.patches, *ax.lines] if a.get_gid()}
    seeds = [r.run.params["seed"] for r in table.rows]
    zero, failed, absent = seeds.index("1"), seeds.index("2"), seeds.index("0")
    assert list(gids[f"marker:arith_mc:{zero}"].get_ydata()) == [0.0]  # a 0 is a point at 0
    assert f"missing:arith_mc:{zero}" not in gids
    for missing in (failed, absent):
        bar = gids[f"missing:arith_mc:{missing}"]
        assert bar.get_hatch() and bar.get_height() > 0 and not bar.get_fill()
        assert f"marker:arith_mc:{missing}" not in gids


@pytest.mark.browser
def test_the_html_key_and_chart_show_every_run_in_chromium(scale, tmp_path):
    from tests.report.test_report import PROBE, _Dom

    table, written = scale.table, scale.written
    probe = tmp_path / "probe.html"
    probe.write_text(written.html.read_text().replace("</body>", PROBE + "\n</body>"))
    page = dump_dom(probe.as_uri(), wait_ms=5000)
    dom = _Dom()
    dom.feed(page)
    png = written.chart.read_bytes()
    size = struct.unpack(">II", png[16:24])
    assert (dom.body.get("data-chart-width"), dom.body.get("data-chart-height")) == tuple(
        str(v) for v in size
    ), dom.body
    key = page[page.index('<table class="key" id="chart-key">') :]
    key = key[: key.index("</table>")]
    for i, row in enumerate(table.rows):
        assert f'<tr data-run="{row.run.run_id}"><td>{i + 1}</td>' in key
        assert f"<td>{row.run.label}</td>" in key
    assert key.count("<tr data-run=") == 20
