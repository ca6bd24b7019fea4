"""Planning a sweep (plan-only, the local launcher: no SLURM needed)."""

from __future__ import annotations

from tests.conftest import run_harness


def test_a_job_that_does_not_compose_is_listed_with_the_others(tmp_path):
    """Each job is composed once, by the launcher, which lists a job Hydra cannot compose among
    the planned ones (Hydra's sweeper no longer composes the batch first, raising raw text)."""
    proc = run_harness(
        [
            "-m",
            "strategy.batch_size=abc,8",
            "hydra/launcher=submitit_local",
            "plan_only=true",
            f"hydra.sweep.dir={tmp_path / 'sweep'}",
        ],
        tmp_path,
    )
    text = proc.stdout + proc.stderr
    assert "Traceback" not in text and "HYDRA_FULL_ERROR" not in text, text[-3000:]
    assert "job 0" in text and "strategy.batch_size=abc" in text, text[-3000:]
    assert "the configuration does not compose" in text
    assert "job 1: strategy.batch_size=8" in text, text[-3000:]
    assert proc.returncode != 0
