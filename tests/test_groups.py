"""An lm-eval group evaluated whole, end to end (issue 34): one run of a group with a subgroup
(in the test's own task folder, over the bundled offline tasks) with the HF engine on the
bundled model, tracked to a real MLflow server.

Every subgroup's and subtask's figure must equal lm-eval's own CLI's and be in summary.json, in
the child run's MLflow metrics (and again after a replay into another store), in the report's
CSV and HTML (opened on demand in chromium); the console shows the group's line with its count,
harness.log and ``verbose=true`` the breakdown. The dataset stays one dataset: a second run
takes it whole from the result store.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from harness.paths import PLUGINS_DIR
from tests.conftest import TINY_MODEL, run_harness, run_lm_eval_cli, run_module
from tests.tracking.test_tracking_server import serve_mlflow

pytestmark = pytest.mark.slow

SUITE = """group: synth_suite
task:
  - arith_mc
  - synth_pairs
aggregate_metric_list:
  - metric: acc
    weight_by_size: true
  - metric: acc_norm
    weight_by_size: true
metadata:
  version: 1.0
"""
PAIRS = """group: synth_pairs
task:
  - compare_mc
  - compare_mc_2shot
aggregate_metric_list:
  - metric: acc
  - metric: acc_norm
metadata:
  version: 1.0
"""
TWO_SHOT = """include: {bundled}
task: compare_mc_2shot
num_fewshot: 2
fewshot_split: test
"""
MEMBERS = ["arith_mc", "synth_pairs", "compare_mc", "compare_mc_2shot"]
"""Depth-first, as lm-eval lists them: a subtask, the subgroup, the subgroup's two subtasks."""
LIMIT = 30


def write_group(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "synth_suite.yaml").write_text(SUITE)
    (folder / "synth_pairs.yaml").write_text(PAIRS)
    bundled = PLUGINS_DIR / "tasks" / "synth" / "compare_mc.yaml"
    (folder / "compare_mc_2shot.yaml").write_text(TWO_SHOT.format(bundled=bundled))
    return folder


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    """The group run once, tracked to a real server; lm-eval's CLI on the same group."""
    tmp = tmp_path_factory.mktemp("groups")
    tasks = write_group(tmp / "tasks")
    server = serve_mlflow(tmp / "mlflow")
    url = next(server)
    try:
        args = [f"task_paths=[{tasks}]", f"allowed_roots=[{tmp}]", "dataset=[synth_suite]",
                f"dataset.synth_suite.limit={LIMIT}", f"outputs_root={tmp / 'out'}"]  # fmt: skip
        proc = run_harness(
            [*args, "tracking=server", f"tracking.uri={url}", f"output_dir={tmp / 'run'}"], tmp
        )
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        report = run_module(
            "harness.report", "--tracking-uri", url, "--out", str(tmp / "report"), cwd=tmp
        )
        assert report.returncode == 0, report.stderr[-3000:]
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=url)
        experiment = client.get_experiment_by_name("harness")
        (child,) = [
            r
            for r in client.search_runs([experiment.experiment_id])
            if "mlflow.parentRunId" in r.data.tags
        ]
    finally:
        next(server, None)
    again = run_harness(
        [*args, "tracking=none", "verbose=true", f"output_dir={tmp / 'again'}"], tmp
    )
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    cli_tasks = tmp / "cli_tasks"  # lm-eval's CLI takes one folder: the bundled suite and the group
    shutil.copytree(PLUGINS_DIR / "tasks" / "synth", cli_tasks / "synth")
    write_group(cli_tasks / "group")
    cli = run_lm_eval_cli(
        ["--model", "hf", "--model_args", f"pretrained={TINY_MODEL},dtype=float32",
         "--tasks", "synth_suite", "--include_path", str(cli_tasks), "--limit", str(LIMIT),
         "--device", "cpu", "--batch_size", "32", "--output_path", str(tmp / "cli")],
        tmp,
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr[-3000:]
    (cli_file,) = (tmp / "cli").rglob("results_*.json")
    return {"tmp": tmp, "proc": proc, "again": again, "child": child,
            "cli": json.loads(cli_file.read_text())}  # fmt: skip


def figures(entry: dict) -> dict[str, float]:
    """lm-eval's numeric figures of one entry, named as harness logs them."""
    from harness.record.metrics import metric_items

    return metric_items(entry)


def test_every_subgroup_and_subtask_equals_lm_evals_cli_in_summary_and_mlflow(ran):
    summary = json.loads((ran["tmp"] / "run" / "summary.json").read_text())
    (name,) = summary["datasets"]
    suite = summary["datasets"][name]
    assert suite["group_subtasks"] == {
        "synth_suite": ["arith_mc", "synth_pairs"],
        "synth_pairs": ["compare_mc", "compare_mc_2shot"],
    }
    assert list(suite["subtasks"]) == MEMBERS
    cli = ran["cli"]["results"]
    assert suite["metrics"] == pytest.approx(figures(cli["synth_suite"]), rel=1e-9, abs=1e-12)
    metrics = ran["child"].data.metrics
    compared = 0
    for member in MEMBERS:
        theirs = figures(cli[member])
        assert theirs and suite["subtasks"][member] == pytest.approx(theirs, rel=1e-9, abs=1e-12)
        for metric, value in suite["subtasks"][member].items():
            assert metrics[f"{member}/{metric}"] == value
            compared += 1
    assert compared == 4 * len(MEMBERS)  # acc, acc_norm and their stderr each
    # the figures differ between subtasks: a value logged under another's name would show
    assert len({suite["subtasks"][m]["acc"] for m in MEMBERS}) > 1
    assert metrics["acc"] == suite["metrics"]["acc"]  # the dataset's own figure: the group's
    assert json.loads(ran["child"].data.tags["group_subtasks"]) == suite["group_subtasks"]


def test_the_console_counts_subtasks_and_the_log_and_verbose_show_them(ran):
    out = ran["proc"].stdout
    line = next(ln for ln in out.splitlines() if ln.startswith("synth_suite "))
    assert line.startswith("synth_suite (3 subtasks in 1 subgroup)  ok"), out[-2000:]
    assert "compare_mc_2shot" not in out
    assert "subgroups and subtasks of synth_suite: in harness.log" in out
    summary = json.loads((ran["tmp"] / "run" / "summary.json").read_text())
    subtasks = summary["datasets"]["synth_suite"]["subtasks"]
    for text in ((ran["tmp"] / "run" / "harness.log").read_text(), ran["again"].stdout):
        shown = {ln.split()[0]: ln for ln in text.splitlines() if ln.startswith("  ")}
        for member in MEMBERS:
            row = next(ln for name, ln in shown.items() if name == member)
            assert f"acc={subtasks[member]['acc']:.4g}" in row, row
    assert "    compare_mc_2shot" in ran["again"].stdout  # under its subgroup


def test_a_second_run_takes_the_group_whole_from_the_store(ran):
    summary = json.loads((ran["tmp"] / "again" / "summary.json").read_text())
    first = json.loads((ran["tmp"] / "run" / "summary.json").read_text())
    suite, before = summary["datasets"]["synth_suite"], first["datasets"]["synth_suite"]
    assert suite["resumed"] and summary["resumed"] == ["synth_suite"]
    assert suite["subtasks"] == before["subtasks"] and suite["metrics"] == before["metrics"]
    assert "no model to load" in ran["again"].stdout


def test_the_report_shows_every_subgroup_and_subtask(ran):
    report = ran["tmp"] / "report"
    (row,) = csv.DictReader((report / "report.csv").open())
    metrics = ran["child"].data.metrics
    assert float(row["synth_suite/acc"]) == metrics["acc"]
    for member in MEMBERS:
        assert float(row[f"synth_suite/{member}/acc"]) == metrics[f"{member}/acc"]
        assert float(row[f"synth_suite/{member}/acc_stderr"]) == metrics[f"{member}/acc_stderr"]
    page = (report / "report.html").read_text()
    details = page[page.index('<details class="group"') : page.index("</details>")]
    assert "synth_suite (lm-eval group): 3 subtasks in 1 subgroup" in details
    for member in MEMBERS:
        assert f">{member}</td>" in details
    assert f"{metrics['compare_mc_2shot/acc']:.4g}" in details


OPEN_PROBE = """<script>
const rows = () => [...document.querySelectorAll("details.group tbody tr")];
const shown = () => rows().filter((r) => r.checkVisibility()).length;
document.body.dataset.closed = shown();
document.querySelector("details.group").open = true;
document.body.dataset.opened = shown();
document.body.dataset.names = rows().map((r) => r.cells[0].textContent).join(",");
</script>"""


@pytest.mark.browser
def test_the_html_opens_a_groups_members_on_demand_in_chromium(ran, tmp_path):
    from html.parser import HTMLParser

    from tests.browser import dump_dom

    page = (ran["tmp"] / "report" / "report.html").read_text()
    probe = tmp_path / "probe.html"
    probe.write_text(page.replace("</body>", OPEN_PROBE + "\n</body>"))

    found: dict[str, str | None] = {}

    class Body(HTMLParser):
        def handle_starttag(self, tag, attrs):
            if tag == "body":
                found.update(attrs)

    Body().feed(dump_dom(probe.as_uri(), wait_ms=2000))
    assert found.get("data-closed") == "0", found  # closed until asked for
    assert found.get("data-opened") == str(len(MEMBERS)), found
    assert found.get("data-names") == ",".join(MEMBERS)


def test_replay_logs_the_members_too(ran, tmp_path):
    from mlflow.tracking import MlflowClient

    store = f"sqlite:///{tmp_path / 'replayed.db'}"
    proc = run_module(
        "harness.replay", str(ran["tmp"] / "run"), "--tracking-uri", store, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    client = MlflowClient(tracking_uri=store)
    experiment = client.get_experiment_by_name("harness")
    (child,) = [
        r
        for r in client.search_runs([experiment.experiment_id])
        if "mlflow.parentRunId" in r.data.tags
    ]
    live = ran["child"].data
    members = {k: v for k, v in live.metrics.items() if k.partition("/")[0] in MEMBERS}
    assert len(members) == 4 * len(MEMBERS)
    assert {k: child.data.metrics[k] for k in members} == members
    assert child.data.tags["group_subtasks"] == live.tags["group_subtasks"]
