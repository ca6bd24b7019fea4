"""Messages say the right thing (issue 35): the fix a message gives fits the case it is about."""

from __future__ import annotations

import logging
import sqlite3

import pytest

from harness.errors import number
from harness.tracking.writer import MlflowWriter, Target


def failed_write(uri: str, err: Exception, caplog) -> str:
    """The warning a failed MLflow write at ``uri`` leaves (tracking then turns itself off)."""
    writer = MlflowWriter(Target(uri=uri, experiment="e"), report=lambda _: None)

    def write() -> None:
        raise err

    with caplog.at_level(logging.WARNING):
        writer._safe("log_batch", write)
    assert not writer.enabled
    return caplog.text


def test_a_full_disk_under_a_local_store_asks_for_room_not_a_server(tmp_path, caplog):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    text = failed_write(uri, sqlite3.OperationalError("database or disk is full"), caplog)
    assert f"free space on the device of {tmp_path}/mlflow.db" in text, text
    assert "start the server" not in text and "pick tracking=local" not in text, text


def test_a_local_store_that_fails_otherwise_is_named_local(tmp_path, caplog):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    text = failed_write(uri, sqlite3.OperationalError("no such table: runs"), caplog)
    assert "the store is local" in text and "start the server" not in text, text


def test_an_unreachable_server_is_still_told_to_start(caplog):
    text = failed_write("http://127.0.0.1:9", ConnectionError("refused"), caplog)
    assert "start the server (mlflow server --port ...)" in text, text


def test_whole_numbers_print_as_typed():
    assert number(5.0) == "5" and number(-3.0) == "-3"
    assert number(0.5) == "0.5" and number(7) == "7" and number(None) == "None"


def test_a_whole_limit_is_said_as_typed(compose_cfg):
    from harness.config.schema import to_run_config
    from harness.config.validate import config_problems

    run = to_run_config(compose_cfg("dataset=[arith_mc]", "dataset.arith_mc.limit=-5"))
    text = "\n".join(config_problems(run, will_run=False))
    assert "dataset.arith_mc.limit=-5: must be positive" in text, text


@pytest.mark.parametrize(
    "override",
    [
        "telemetry.interval_s=0.0",
        "strategy.gpu_memory_utilization=2.0",
        "strategy.journal_slice_s=0.0",
        "strategy.stall_timeout_s=-1.0",
    ],
)
def test_a_whole_float_setting_is_said_as_typed(compose_cfg, override):
    """Every float-typed setting's problem says a whole number as typed, ``0``, not ``0.0``, and
    its fix too."""
    import re

    from harness.config.schema import to_run_config
    from harness.config.validate import config_problems

    run = to_run_config(compose_cfg("dataset=[arith_mc]", override))
    text = "\n".join(config_problems(run, will_run=False))
    key, value = override.split("=")
    assert f"{key}={number(float(value))}: must be" in text, text
    assert not re.search(r"=-?\d+\.0\b", text), text


def test_allowed_roots_are_listed_once_where_the_cwd_is_the_project(compose_cfg, monkeypatch):
    from harness.config.schema import to_run_config
    from harness.config.validate import config_problems
    from harness.paths import PROJECT_ROOT

    monkeypatch.chdir(PROJECT_ROOT)
    cfg = compose_cfg("task_paths=[/usr/share]", f"allowed_roots=[{PROJECT_ROOT}]")
    text = "\n".join(config_problems(to_run_config(cfg), will_run=False))
    roots = text.split("outside the allowed roots (", 1)[1].split(")", 1)[0]
    assert roots == str(PROJECT_ROOT.resolve()), text


@pytest.mark.slow  # Hydra's help page: a process of its own, ~3 s (10 s on a loaded machine)
def test_help_names_every_exit_code_and_the_report_and_replay_commands(tmp_path):
    from tests.conftest import run_harness

    proc = run_harness(["--help"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    page = proc.stdout
    for code in ("0  every dataset", "1  a dataset failed", "2  bad input", "130 Ctrl-C"):
        assert code in page, page[-3000:]
    assert (
        "python -m harness.report --help" in page and "python -m harness.replay <run dir>" in page
    )


def test_lm_eval_style_key_values_are_named_with_both_forms_hydra_reads():
    from harness.config.argv import unquoted_equals_problems

    (one,) = unquoted_equals_problems(["gen_kwargs=max_gen_toks=2,temperature=0"])
    assert "\"gen_kwargs='max_gen_toks=2,temperature=0'\"" in one, one
    assert "'gen_kwargs={max_gen_toks:2,temperature:0}'" in one, one  # quoted: a comma
    assert unquoted_equals_problems(["gen_kwargs='max_gen_toks=2'", "gen_kwargs={a:1}"]) == []
    assert unquoted_equals_problems(["dataset=[arith_mc]", "-m"]) == []


def test_a_setting_of_an_unselected_dataset_is_fixed_by_selecting_it():
    from harness.config.argv import unselected_dataset_problems

    (one,) = unselected_dataset_problems(["dataset=[arith_mc]", "+dataset.compare_mc.limit=5"])
    assert "Fix: dataset=[arith_mc,compare_mc] dataset.compare_mc.limit=5 " in one, one
    assert unselected_dataset_problems(["dataset=[a,b]", "dataset.b.limit=5"]) == []
    assert unselected_dataset_problems(["-m", "dataset=[a]", "dataset.b.limit=5"]) == []


@pytest.mark.parametrize("verbose", ["false", "true"])
def test_a_runs_problem_is_said_once_even_verbose(compose_cfg, capsys, caplog, verbose):
    """A real run raises its problems in the ``error:`` block; its plan (the table with
    ``verbose=true``) does not list them first, on the console or in harness.log (issue 35)."""
    from harness.config.schema import to_run_config
    from harness.errors import ConfigError
    from harness.runner import make_checked_plan

    run = to_run_config(
        compose_cfg("dataset=[arith_mc]", "strategy.batch_size=0", f"verbose={verbose}")
    )
    with caplog.at_level(logging.INFO), pytest.raises(ConfigError) as err:
        make_checked_plan(run)
    assert "strategy.batch_size=0" in str(err.value)
    shown = capsys.readouterr().out
    assert shown.startswith("plan: tiny_char")
    assert ("needed/budget" in shown) == (verbose == "true")  # the table, when verbose
    assert "strategy.batch_size=0" not in shown + caplog.text, shown
