"""Put saved runs into MLflow later: ``python -m harness.replay RUN_DIR... [--tracking-uri URI]``.

A run whose tracking server was down (at start or mid-run) still has everything in its run
directory; replay logs it as the live run would have, through the same functions (parent params
from config.yaml, a child run per dataset with its metrics, result and samples, the telemetry,
the totals, config.yaml, summary.json and the reproducibility record), into the tracking target
of the run's own config or the one given.

Idempotent: every run harness logs carries the run directory's ``harness.run_uid``, and a parent
logged whole carries ``harness.logged=complete`` (its last record). A run directory already
logged whole is skipped. A partial one (the server died mid-run, the run was killed) is
completed, not rewritten: its live parent and children keep their ids, and what they lack is
added to them (a metric key or param they hold already is not logged again, so no series
repeats a point), their end state set; a dataset's child the live run never opened is created.
A child of a dataset cut short (the in-flight one of a killed run) is kept as it was.
"""

from harness.replay.cli import main
from harness.replay.into_mlflow import Replayed, log_run_dir, replay_run
from harness.replay.reading import ReplayError, read_run_dir

__all__ = ["ReplayError", "Replayed", "log_run_dir", "main", "read_run_dir", "replay_run"]
