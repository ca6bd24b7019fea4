"""Paired, per-sample comparison of recorded runs (``python -m harness.report --baseline``).

Read from the record alone (run directories or MLflow), never re-running a model:
``runs.py`` finds each run and its files, ``samples.py`` reads one dataset's per-sample records,
``join.py`` pairs them by identity, ``stats.py`` holds the tests, ``groups.py`` an lm-eval group's
weights, ``rows.py`` builds one row per candidate, dataset and subtask, ``verdict.py`` the
verdicts and the gate, ``output.py`` writes compare.json/.md/.html and ``log_run.py`` logs the
comparison as an MLflow run.
"""
