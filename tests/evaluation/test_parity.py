"""The harness's metrics equal those of lm-eval's own CLI on the same model and task."""

from __future__ import annotations

import json

import pytest

from harness.paths import PLUGINS_DIR
from tests.conftest import BUNDLED_TASKS, TINY_MODEL, run_harness, run_lm_eval_cli

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("parity")
    cli_out = tmp / "cli"
    cli = run_lm_eval_cli(
        [
            "--model", "hf", "--model_args", f"pretrained={TINY_MODEL},dtype=float32",
            "--tasks", ",".join(BUNDLED_TASKS), "--include_path", str(PLUGINS_DIR / "tasks"),
            "--device", "cpu", "--batch_size", "32", "--output_path", str(cli_out),
        ],
        tmp,
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr[-3000:]
    (cli_file,) = cli_out.rglob("results_*.json")
    harness = run_harness([f"output_dir={tmp / 'harness'}", "tracking=none"], tmp)
    assert harness.returncode == 0, harness.stderr[-3000:]
    return json.loads(cli_file.read_text()), tmp / "harness" / "results"


@pytest.mark.parametrize("task", BUNDLED_TASKS)
def test_metric_equals_lm_eval_cli(both, task):
    cli, harness_dir = both
    ours = json.loads((harness_dir / f"{task}.json").read_text())["results"][task]
    theirs = cli["results"][task]
    metrics = [k for k, v in theirs.items() if "," in k and isinstance(v, float | int)]
    assert metrics, theirs
    for key in metrics:
        assert ours[key] == pytest.approx(theirs[key], rel=1e-9, abs=1e-12), key
    assert ours["sample_len"] == theirs["sample_len"]
