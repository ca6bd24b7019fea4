"""MLflow tracking: names of the records (``names``), the run's queueing side (``tracker``), the
MLflow-writing side (``writer``) and the process it runs in for a live run (``worker``).

Importing this package never imports MLflow.
"""

from harness.tracking.names import (
    KIND,
    KIND_TAG,
    LOGGED_TAG,
    RUN_UID_TAG,
    VIEW_KEY,
    VIEW_TAG,
    flatten,
    fresh_run_uid,
    headline,
    local_uri,
    mlflow_defaults,
    parent_tags,
    run_uid,
    runs_table_url,
    view_columns,
)
from harness.tracking.tracker import Tracker, log_run_end

__all__ = [
    "KIND",
    "KIND_TAG",
    "LOGGED_TAG",
    "RUN_UID_TAG",
    "VIEW_KEY",
    "VIEW_TAG",
    "Tracker",
    "flatten",
    "fresh_run_uid",
    "headline",
    "local_uri",
    "log_run_end",
    "mlflow_defaults",
    "parent_tags",
    "run_uid",
    "runs_table_url",
    "view_columns",
]
