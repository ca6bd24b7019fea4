"""The console: quiet by default (phase lines, warnings, errors), chatty with verbose=true; the
run's log file gets everything. The default run's console is checked in test_default_run.py."""

from __future__ import annotations

import io
import logging

import pytest

from harness import console
from harness.config.schema import to_run_config
from harness.planning.auto import plan_run
from harness.views import format_plan, format_plan_line
from tests.conftest import run_harness


def record(name: str, level: int) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, "message", None, None)


def test_console_filter_shows_warnings_always_and_info_only_when_chatty():
    quiet, chatty = console.ConsoleFilter(), console.ConsoleFilter(show_info=True)
    for name in ("lm_eval.evaluator", "harness.tracking", "transformers"):
        assert not quiet.filter(record(name, logging.INFO))
        assert chatty.filter(record(name, logging.INFO))
        for level in (logging.WARNING, logging.ERROR):
            assert quiet.filter(record(name, level)) and chatty.filter(record(name, level))
    # Phase lines are printed by say(); the console handler must not show them twice.
    for level in (logging.INFO, logging.ERROR):
        phase = record(console.PHASE_LOGGER, level)
        assert not quiet.filter(phase) and not chatty.filter(phase)


def test_say_prints_the_line_and_records_the_fuller_version(capsys):
    logger = logging.getLogger(console.PHASE_LOGGER)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        console.say("short", record="long\ntable")
        console.say("file only", show=False)
        console.say("error: bad", err=True, level=logging.ERROR)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    out, err = capsys.readouterr()
    assert out == "short\n" and err == "error: bad\n"
    # A multi-line record starts on its own line, so a table stays aligned in the log file.
    assert stream.getvalue() == "\nlong\ntable\nfile only\nerror: bad\n"


def test_quiet_console_turns_off_every_progress_bar(monkeypatch):
    from tqdm import tqdm

    console._gate_progress_bars()
    monkeypatch.setattr(console, "_bars_off", True)
    sink = io.StringIO()
    # lm-eval passes disable=False explicitly (which TQDM_DISABLE cannot override).
    with tqdm(total=3, disable=False, file=sink) as bar:
        bar.update(3)
    assert sink.getvalue() == ""
    monkeypatch.setattr(console, "_bars_off", False)
    with tqdm(total=3, disable=False, file=sink) as bar:
        bar.update(3)
    assert "3/3" in sink.getvalue()


def test_plan_line_says_engine_sizes_memory_and_verdict(compose_cfg):
    cfg = compose_cfg("model=falcon_40b", "strategy=tp4", "tier=medium", "plan_only=true")
    plan = plan_run(to_run_config(cfg))
    line = format_plan_line(plan).splitlines()[0]
    assert line.startswith("plan: falcon_40b | strategy tp4 | tier medium | vllm on cuda")
    assert "tp 4 x pp 1 x dp 1 = 4 GPU(s)" in line
    m = plan.memory
    assert f"{m.needed:.2f} / {m.budget:.2f} GiB per GPU" in line
    assert line.endswith("| FITS")
    assert format_plan(plan).startswith("plan: falcon_40b | strategy tp4 | tier medium | FITS")


def test_plan_line_leaves_problems_to_the_error_block(compose_cfg):
    """A run raises its plan's problems (``error:``): the line above says the verdict only, so
    each problem is printed once (issue 35); plan-only's table lists them."""
    cfg = compose_cfg("model=llama2_70b", "strategy=single", "tier=small", "plan_only=true")
    plan = plan_run(to_run_config(cfg))
    text = format_plan_line(plan)
    assert text.splitlines()[0].endswith("| DOES NOT FIT")
    assert "problem(s):" not in text and "strategy=int8" not in text
    assert "strategy=int8" in format_plan(plan)


@pytest.mark.slow
def test_verbose_shows_lm_eval_info_progress_bars_and_the_full_plan(tmp_path):
    args = ["dataset=[arith_mc]", "dataset.arith_mc.limit=10", "tracking=none", "verbose=true"]
    proc = run_harness([*args, f"output_dir={tmp_path / 'run'}"], tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "needed/budget" in proc.stdout and "loaded tiny_char in " in proc.stdout
    assert "[INFO] Building contexts for arith_mc on rank 0" in proc.stderr
    assert "Running loglikelihood requests" in proc.stderr  # lm-eval's progress bar
    assert "[1/1] arith_mc ok in " in proc.stdout


def warning(name: str, message: str) -> logging.LogRecord:
    return logging.LogRecord(name, logging.WARNING, __file__, 1, message, None, None)


def test_a_quiet_console_counts_repeating_warnings_in_one_line_each(monkeypatch, capsys):
    monkeypatch.setattr(console, "_collapsed", {})
    quiet, chatty = console.ConsoleFilter(), console.ConsoleFilter(show_info=True)
    notices = [
        warning("datasets.load", f"Using the latest cached version of the dataset since o/r{i}")
        for i in range(57)
    ]
    truncated = [
        warning("lm_eval.models.huggingface", f"Left truncation applied. Original {i}")
        for i in range(30)
    ]
    engine = [warning(console.ENGINE_OUTPUT_LOGGER, "[e] WARNING a") for _ in range(3)]
    same = [warning("transformers", f"slow tokenizer for {i} inputs") for i in range(4)]
    shown = [r for r in notices + truncated + engine + same if quiet.filter(r)]
    assert [r.getMessage() for r in shown] == ["slow tokenizer for 0 inputs"]  # the first only
    error = logging.LogRecord("lm_eval", logging.ERROR, __file__, 1, "Left truncation", None, None)
    assert quiet.filter(error)  # errors are never held back
    assert all(chatty.filter(r) for r in notices)  # verbose=true shows each
    assert quiet.filter(notices[0]) is False  # a second console handler: counted once
    console.summarise_collapsed()
    lines = capsys.readouterr().err.splitlines()
    assert lines == [
        'warning: datasets read 57 offline cache notice(s) ("Using the latest cached version ...")'
        " (see harness.log; verbose=true shows each)",
        "warning: lm-eval truncated prompts to fit the model's length (30 warning(s)) (see "
        "harness.log; verbose=true shows each)",
        "warning: the engine's own process logged 3 warning(s) (see harness.log; verbose=true "
        "shows each)",
        "warning: 3 more warning(s) like: slow tokenizer for 0 inputs (see harness.log; "
        "verbose=true shows each)",
    ]
    console.summarise_collapsed()
    assert capsys.readouterr().err == ""  # counted afresh


def test_a_counted_warning_with_braces_is_summarised_as_written(monkeypatch, capsys):
    """lm-eval's warnings quote dicts ("generation_kwargs: {'max_gen_toks': 3}"): the summary
    line holds them as written (a format string of them raised KeyError and exit 1)."""
    monkeypatch.setattr(console, "_collapsed", {})
    quiet = console.ConsoleFilter()
    said = "generation_kwargs: {'max_gen_toks': 3, 'until': ['e']} specified through cli"
    for _ in range(3):
        quiet.filter(warning("lm_eval.evaluator", said))
    console.summarise_collapsed()
    assert capsys.readouterr().err.splitlines() == [
        f"warning: 2 more warning(s) like: {said} (see harness.log; verbose=true shows each)"
    ]
