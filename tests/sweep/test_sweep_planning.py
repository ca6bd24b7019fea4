"""Planning a sweep (plan-only, the local launcher: no SLURM needed)."""

from __future__ import annotations

from tests.conftest import run_harness


def test_a_job_that_does_not_compose_is_listed_with_the_others(tmp_path):
    """Each job is composed once, by the launcher, which lists a job Hydra cannot compose among
    the planned ones (Hydra's sweeper no longer composes the batch first, raising raw text)."""
    proc = run_harness(
        [
            "-m",
            "strategy.tensor_parallel_size=abc,1",
            "hydra/launcher=submitit_local",
            "plan_only=true",
            f"hydra.sweep.dir={tmp_path / 'sweep'}",
        ],
        tmp_path,
    )
    text = proc.stdout + proc.stderr
    assert "Traceback" not in text and "HYDRA_FULL_ERROR" not in text, text[-3000:]
    assert "job 0" in text and "strategy.tensor_parallel_size=abc" in text, text[-3000:]
    assert "the configuration does not compose" in text
    assert "job 1: strategy.tensor_parallel_size=1" in text, text[-3000:]
    assert proc.returncode == 2  # bad input, as a run's


def test_a_refused_plan_only_sweep_exits_2_for_bad_input_and_1_when_it_does_not_fit(tmp_path):
    """Exit codes of a plan-only sweep are a plan-only run's: 2 when a job's config breaks a
    rule (whatever else is wrong), 1 when every job is valid but one does not fit."""

    def plan_only(*args: str) -> tuple[int, str]:
        proc = run_harness(
            ["-m", *args, "dataset=[arith_mc]", "hydra/launcher=submitit_local",
             "plan_only=true", f"outputs_root={tmp_path / 'out'}"],
            tmp_path,
        )  # fmt: skip
        return proc.returncode, proc.stdout + proc.stderr

    code, text = plan_only("strategy.batch_size=0,8")
    assert code == 2, text[-3000:]
    assert "strategy.batch_size=0: must be a number of at least 1" in text
    assert "Traceback" not in text
    assert "job 1: strategy.batch_size=8" in text  # the valid job is still planned

    code, text = plan_only("tier.host_memory_gib=2,0.5")
    assert code == 1, text[-3000:]
    assert "does not fit" in text

    code, text = plan_only("tier.host_memory_gib=2,0.5", "dataset.arith_mc.limit=-3,5")
    assert code == 2, text[-3000:]
    assert "does not fit" in text and "dataset.arith_mc.limit=-3: must be positive" in text


def test_a_password_in_a_swept_uri_is_masked_on_the_console_and_in_the_sweep_dir(tmp_path):
    secret = "hunter2pw"
    uris = f"http://u:{secret}@h1:5000,http://u:{secret}@h2:5000"
    sweep = tmp_path / "sweep"
    proc = run_harness(
        [
            "-m",
            "tracking=server",
            f"tracking.uri={uris}",
            "dataset=[arith_mc]",
            "hydra/launcher=submitit_local",
            "plan_only=true",
            f"hydra.sweep.dir={sweep}",
        ],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert secret not in proc.stdout + proc.stderr
    assert "***@h1" in proc.stdout.replace("\\", "")
    leaked = [p for p in sweep.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]
    assert not leaked, leaked
    shown = run_harness(
        ["tracking=server", f"tracking.uri=http://u:{secret}@h:5000", "--cfg", "job"], tmp_path
    )
    assert shown.returncode == 0 and secret not in shown.stdout and "***@h:5000" in shown.stdout
