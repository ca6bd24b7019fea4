"""The sweep's outcome table, from what each job's run directory recorded (no jobs run here)."""

from __future__ import annotations

import json
from pathlib import Path

from harness.sweep.outcome import JobOutcome, format_outcomes, tracking_outcome


def job(index: int, tracking: str, state: str = "COMPLETED") -> JobOutcome:
    return JobOutcome(index, "tiny_char", "single", "local", state, 1, 0, f"/r/{index}", "-")


def test_the_outcome_table_says_each_jobs_tracking_and_how_to_replay_what_was_lost(tmp_path):
    jobs = [job(0, ""), job(1, "")]
    jobs[0].tracking = "logged"
    jobs[1].tracking = "failed: MLflow start failed at http://h:1 (ConnectionError)"
    text = format_outcomes(jobs, tmp_path)
    head = text.splitlines()[1].split()
    assert "tracking" in head
    assert "job 1 completed, tracking lost: MLflow start failed at http://h:1" in text
    assert text.splitlines()[-1] == (
        "2 of 2 job(s) completed; MLflow tracking failed in 1 (their runs are on disk; "
        "`python -m harness.replay /r/1` logs them)"
    )
    assert "all 2 job(s) completed" not in text
    jobs[1].tracking = "off"
    assert format_outcomes(jobs, tmp_path).endswith("all 2 job(s) completed")


def test_a_jobs_tracking_is_read_from_its_run_done_event(tmp_path: Path):
    assert tracking_outcome(tmp_path) == ""  # no record: nothing to say
    events = tmp_path / "events.jsonl"
    done = {"event": "run_done", "status": "FINISHED", "failed": []}
    events.write_text(json.dumps({**done, "tracking_failure": "MLflow end run failed"}) + "\n")
    assert tracking_outcome(tmp_path) == "failed: MLflow end run failed"


def test_a_job_that_reused_stored_results_says_how_many(tmp_path: Path):
    """A packed sweep whose jobs took datasets from the result store says so per job: the
    count comes from each run's summary.json, and the table shows it beside ok/failed."""
    from harness.record.outcome import DatasetOutcome
    from harness.record.rundir import RunDirectory
    from harness.record.summary import RunSummary
    from harness.sweep.outcome import reused_datasets

    assert reused_datasets(tmp_path) is None  # no summary: nothing known
    reused = DatasetOutcome(name="arith_mc", task="arith_mc", metrics={"acc": 0.5}, resumed=True)
    fresh = DatasetOutcome(name="reverse_gen", task="reverse_gen", metrics={"acc": 0.1})
    datasets = {"arith_mc": reused, "reverse_gen": fresh}
    RunDirectory(tmp_path).write_summary(RunSummary(model="m", strategy="s", datasets=datasets))
    assert reused_datasets(tmp_path) == 1
    jobs = [job(0, "off"), job(1, "off")]
    jobs[0].datasets_reused = 1
    jobs[1].datasets_reused = 0
    rows = format_outcomes(jobs, tmp_path).splitlines()[2:4]
    assert "1/0 (1 reused)" in rows[0] and "reused" not in rows[1]
