"""Plan-only's quick way through Hydra (``harness.app.quick_plan``: Hydra's compose API, no
Hydra job) answers exactly as the Hydra job does: the same console, exit code, plan and config.

A ``hydra.*`` override other than the run directory (here ``hydra.job.chdir=false``, Hydra's
default for harness) sends a command through ``hydra.main``, so each command runs both ways.
"""

from __future__ import annotations

import json

import pytest

from harness.app import asks_quick_plan
from tests.conftest import run_harness

COMMANDS = {
    "fits": ["model=falcon_40b", "strategy=tp4", "tier=medium"],
    "auto": ["model=llama3_1_70b", "strategy=auto", "tier=auto"],
    "this-node": ["model=falcon_40b", "strategy=tp4"],
    "does-not-fit": ["model=llama2_70b", "strategy=single", "tier=small"],
    "cannot-work": ["model=llama3_1_8b", "strategy=tp8", "tier=medium"],
    "bad-value": ["strategy.batch_size=0"],
    "rule-broken": ["model=llama3_1_8b", "strategy=tp4", "strategy.tensor_parallel_size=3"],
    "engine-arg-misspelt": ["strategy.engine_args={attn_implmentation:eager}"],
    "secret": ["tracking=server", "tracking.uri=http://ann:s3cret@mlflow.example:5000"],
}


@pytest.mark.parametrize("name", list(COMMANDS))
def test_the_quick_way_answers_as_the_hydra_job_does(tmp_path, name):
    answers = {}
    for way, extra in (("quick", []), ("job", ["hydra.job.chdir=false"])):
        run_dir = tmp_path / way
        args = [*COMMANDS[name], "plan_only=true", f"output_dir={run_dir}", *extra]
        proc = run_harness(args, tmp_path)
        assert proc.returncode in (0, 1, 2), proc.stderr[-2000:]
        files = {}
        for file in ("plan.json", "config.yaml"):
            if (run_dir / file).is_file():
                files[file] = (run_dir / file).read_text().replace(str(run_dir), "<run>")
        out = proc.stdout.replace(str(run_dir), "<run>")
        answers[way] = (proc.returncode, out, proc.stderr, files)
        assert "s3cret" not in proc.stdout + proc.stderr + "".join(files.values())
    assert answers["quick"] == answers["job"]
    code, out, err, files = answers["quick"]
    expected = {"fits": 0, "auto": 0, "this-node": 1, "does-not-fit": 1, "cannot-work": 1}
    if name in expected:  # this node has no GPU: tp4 on it does not fit
        assert code == expected[name], out + err
    if name in ("rule-broken", "engine-arg-misspelt"):  # no tier mends these: bad input (2)
        assert code == 2 and "| REFUSED (bad input)" in out, out + err
        assert "FITS" not in out.replace("DOES NOT FIT", ""), out
        assert "DOES NOT FIT" not in out, out
        needle = "tensor parallel size (3)" if name == "rule-broken" else "attn_implmentation"
        assert needle in out, out
    if name == "bad-value":  # bad input: refused (exit 2), not "does not fit"; said once
        assert code == 2 and "REFUSED (bad input)" in out and "DOES NOT FIT" not in out, out
        assert out.count("strategy.batch_size=0") == 1, out
        assert json.loads(files["plan.json"])["bad_input"], files
    assert json.loads(files["plan.json"])["fits"] is (code == 0)


def test_which_commands_take_the_quick_way():
    assert asks_quick_plan(["model=falcon_40b", "plan_only=true"])
    assert asks_quick_plan(["plan_only=True", "hydra.run.dir=/tmp/x"])
    assert not asks_quick_plan(["plan_only=true", "plan_only=false"])  # the last word wins
    assert not asks_quick_plan(["model=falcon_40b"])
    for other in ("-m", "--cfg", "--help", "-cd", "hydra.job.chdir=false", "+hydra.searchpath=[]"):
        assert not asks_quick_plan(["plan_only=true", other])
