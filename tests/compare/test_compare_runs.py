"""The paired comparison end to end (issue 36): the bundled model and a copy whose weights the
test perturbs, each evaluated once with ``log_samples=true`` (HF engine, tracked to a real
MLflow server) on arith_mc and a two-subtask group; the comparison read back from the run
directories (no MLflow) and from MLflow (a run id and a ``model=`` selector).

The flips are counted here from each run's own samples; McNemar's p-value and the bootstrap
interval are statsmodels' and scipy's on the same table; identical runs give no flip and PASS;
the comparison run is in MLflow with its metrics; the group compares per subtask and as lm-eval
weighs it.
"""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from harness.paths import PLUGINS_DIR
from tests.conftest import TINY_MODEL, run_harness, run_module
from tests.tracking.test_tracking_server import serve_mlflow

pytestmark = pytest.mark.slow

PAIR = """group: cmp_pair
task:
  - compare_mc
  - compare_mc_2shot
aggregate_metric_list:
  - metric: acc
    weight_by_size: true
metadata:
  version: 1.0
"""
TWO_SHOT = """include: {bundled}
task: compare_mc_2shot
num_fewshot: 2
fewshot_split: test
"""
ARITH_LIMIT, PAIR_LIMIT, RESAMPLES = 40, 8, 2000


def perturbed_copy(folder: Path) -> Path:
    """The bundled model with Gaussian noise (1.5 standard deviations, seed 0) added to every
    projection matrix: enough to flip a third of arith_mc's first 40 answers."""
    import torch
    from safetensors.torch import load_file, save_file

    shutil.copytree(TINY_MODEL, folder)
    weights = load_file(folder / "model.safetensors")
    noise = torch.Generator().manual_seed(0)
    for name, tensor in weights.items():
        if "proj" in name:
            weights[name] = tensor + 1.5 * tensor.std() * torch.randn(tensor.shape, generator=noise)
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    return folder


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Both runs, tracked to one server (kept up for the tests that read it)."""
    tmp = tmp_path_factory.mktemp("compare")
    tasks = tmp / "tasks"
    tasks.mkdir()
    (tasks / "cmp_pair.yaml").write_text(PAIR)
    bundled = PLUGINS_DIR / "tasks" / "synth" / "compare_mc.yaml"
    (tasks / "compare_mc_2shot.yaml").write_text(TWO_SHOT.format(bundled=bundled))
    server = serve_mlflow(tmp / "mlflow")
    url = next(server)
    common = [f"task_paths=[{tasks}]", f"allowed_roots=[{tmp}]", "dataset=[arith_mc,cmp_pair]",
              f"dataset.arith_mc.limit={ARITH_LIMIT}", f"dataset.cmp_pair.limit={PAIR_LIMIT}",
              "log_samples=true", f"outputs_root={tmp / 'out'}", "tracking=server",
              f"tracking.uri={url}"]  # fmt: skip
    model = perturbed_copy(tmp / "perturbed")
    for name, extra in (("a", []), ("b", [f"model.pretrained={model}"])):
        proc = run_harness([*common, *extra, f"output_dir={tmp / name}"], tmp)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    yield {"tmp": tmp, "url": url, "a": tmp / "a", "b": tmp / "b"}
    next(server, None)


def scores(run_dir: Path, dataset: str) -> dict[tuple[str, int], float]:
    """(task, doc_id) -> acc, read from the run's own samples file."""
    with gzip.open(run_dir / "samples" / f"{dataset}.jsonl.gz", "rt") as handle:
        records = [json.loads(line) for line in handle]
    return {(r["task"], r["doc_id"]): r["acc"] for r in records}


def report(runs, *args: str) -> tuple[int, dict, str]:
    out = runs["tmp"] / "report"
    shutil.rmtree(out, ignore_errors=True)
    proc = run_module("harness.report", *args, "--out", str(out), "--resamples",
                      str(RESAMPLES), cwd=runs["tmp"])  # fmt: skip
    document = json.loads((out / "compare.json").read_text()) if proc.returncode < 2 else {}
    return proc.returncode, document, proc.stderr + proc.stdout  # the verdict: last line


def test_identical_runs_read_from_their_directories_pass(runs):
    code, doc, out = report(runs, "--baseline", str(runs["a"]), "--runs", str(runs["a"]),
                            "--fail-if-worse", "0")  # fmt: skip
    assert code == 0, out
    assert "PASS" in out and "comparison logged" not in out  # no store named: record only
    assert [(r["dataset"], r["subtask"]) for r in doc["rows"]] == [
        ("arith_mc", None), ("cmp_pair", None), ("cmp_pair", "compare_mc"),
        ("cmp_pair", "compare_mc_2shot")]  # fmt: skip
    for row in doc["rows"]:
        assert row["difference"] == 0 and row["flips_better"] == row["flips_worse"] == 0
        assert row["verdict"] == "same" and row["flipped"] == []
    assert doc["rows"][0]["shared"] == ARITH_LIMIT and doc["rows"][1]["shared"] == 2 * PAIR_LIMIT


def test_perturbed_copy_flips_exactly_the_samples_counted_here(runs):
    from mlflow.tracking import MlflowClient
    from scipy.stats import bootstrap
    from statsmodels.stats.contingency_tables import mcnemar

    client = MlflowClient(tracking_uri=runs["url"])
    experiment = client.get_experiment_by_name("harness")
    parents = {r.data.tags["run_dir"]: r.info.run_id
               for r in client.search_runs([experiment.experiment_id])
               if "mlflow.parentRunId" not in r.data.tags}  # fmt: skip
    candidate = parents[str(runs["b"])]
    code, doc, out = report(runs, "--tracking-uri", runs["url"], "--baseline", "model=tiny_char",
                            "--runs", candidate, "--fail-if-worse", "0.05")  # fmt: skip
    a, b = scores(runs["a"], "arith_mc"), scores(runs["b"], "arith_mc")
    worse = sorted(k[1] for k in a if a[k] == 1 and b[k] == 0)
    better = sorted(k[1] for k in a if a[k] == 0 and b[k] == 1)
    assert len(worse) >= 8, "the perturbation no longer flips enough answers for this test"
    row = doc["rows"][0]
    assert (row["dataset"], row["flips_worse"], row["flips_better"]) == (
        "arith_mc", len(worse), len(better))  # fmt: skip
    assert sorted(f["doc_id"] for f in row["flipped"] if f["direction"] == "worse") == worse
    assert sorted(f["doc_id"] for f in row["flipped"] if f["direction"] == "better") == better
    both = sum(1 for k in a if a[k] == b[k] == 1)
    table = [[both, len(worse)], [len(better), len(a) - both - len(worse) - len(better)]]
    assert row["p_value"] == pytest.approx(mcnemar(table, exact=True).pvalue, rel=1e-9)
    x = np.array([a[k] for k in sorted(a)])
    y = np.array([b[k] for k in sorted(a)])
    interval = bootstrap((x, y), lambda p, q, axis: np.mean(q - p, axis=axis), paired=True,
                         n_resamples=RESAMPLES, method="percentile",
                         rng=np.random.default_rng(0)).confidence_interval  # fmt: skip
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((interval.low, interval.high))
    assert code == 1 and row["verdict"] == "worse", out
    assert out.splitlines()[-1].startswith("FAIL") and "arith_mc" in out.splitlines()[-1]
    assert (runs["tmp"] / "report" / "report.html").is_file()  # the side-by-side, beside it
    assert doc["baseline"]["run_id"] == parents[str(runs["a"])]
    group = [r for r in doc["rows"] if r["dataset"] == "cmp_pair"]
    assert [r["subtask"] for r in group] == [None, "compare_mc", "compare_mc_2shot"]
    result = json.loads((runs["a"] / "results" / "cmp_pair.json").read_text())
    assert group[0]["baseline"] == pytest.approx(result["results"]["cmp_pair"]["acc,none"])
    assert group[0]["flips_worse"] == group[1]["flips_worse"] + group[2]["flips_worse"]
    html = (runs["tmp"] / "report" / "compare.html").read_text()
    assert all(f">{d}</td>" in html for d in worse)
    # the two pages link each other
    assert 'href="report.html"' in html
    assert 'href="compare.html"' in (runs["tmp"] / "report" / "report.html").read_text()
    compared = client.get_experiment_by_name("harness-compare")
    (logged,) = client.search_runs([compared.experiment_id])
    assert logged.data.tags["harness.compare.candidate"] == candidate
    assert logged.data.tags["harness.compare.baseline"] == doc["baseline"]["run_id"]
    assert logged.data.tags["verdict"] == "worse"
    assert logged.data.metrics["arith_mc/flips_worse"] == len(worse)
    assert logged.data.metrics["arith_mc/difference"] == pytest.approx(row["difference"])
    assert "compare.json" in [f.path for f in client.list_artifacts(logged.info.run_id)]
