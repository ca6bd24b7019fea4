"""MLflow tracking: names of the records (``names``), the run's queueing side (``tracker``), the
MLflow-writing side (``writer``), the process it runs in for a live run (``worker``), and what
the live run and replay both log of a run directory (``rundir``), and a dataset's samples as the
table MLflow's UI shows and compares (``samples_table``).

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
    local_uri,
    mlflow_defaults,
    parent_run_name,
    parent_tags,
    run_page_url,
    run_uid,
    runs_table_url,
    samples_compare_link,
    samples_table_link,
    ui_base,
    view_columns,
)
from harness.tracking.tracker import Tracker

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
    "local_uri",
    "mlflow_defaults",
    "parent_run_name",
    "parent_tags",
    "run_page_url",
    "run_uid",
    "runs_table_url",
    "samples_compare_link",
    "samples_table_link",
    "ui_base",
    "view_columns",
]
