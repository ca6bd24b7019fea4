"""What an engine's own process prints reaches the run's log, not the console: the pipe that is
its stdout and stderr (and its children's), read line by line by the parent."""

from __future__ import annotations

import logging
import multiprocessing
import subprocess
import sys

from harness.console import ENGINE_OUTPUT_LOGGER
from harness.engines.process.output import OutputReader, level_of, redirect_output, visible


def _child(writer) -> None:
    redirect_output(writer)
    print("plain INFO line", flush=True)
    print("(EngineCore pid=7) WARNING 12-06 [x.py:1] careful", file=sys.stderr, flush=True)
    sys.stderr.write("bar 10%\rbar 100%\n")
    sys.stderr.flush()
    # A grandchild writes to the inherited descriptors directly.
    subprocess.run([sys.executable, "-c", "import os; os.write(2, b'ERROR 12-06 boom\\n')"])


def test_the_child_and_its_children_print_into_the_log(caplog):
    ctx = multiprocessing.get_context("spawn")
    reader = OutputReader(ctx, "engine-Test")
    proc = ctx.Process(target=_child, args=(reader.writer,))
    with caplog.at_level(logging.INFO, logger=ENGINE_OUTPUT_LOGGER):
        proc.start()
        reader.started()
        proc.join(60)
        reader.join(10)
    got = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == ENGINE_OUTPUT_LOGGER]
    assert got == [
        (logging.INFO, "[engine-Test] plain INFO line"),
        (logging.WARNING, "[engine-Test] (EngineCore pid=7) WARNING 12-06 [x.py:1] careful"),
        (logging.INFO, "[engine-Test] bar 100%"),  # a progress bar's last frame
        (logging.ERROR, "[engine-Test] ERROR 12-06 boom"),
    ]


def test_lines_are_graded_as_a_reader_would():
    assert level_of("Traceback (most recent call last):") == logging.ERROR
    assert level_of("ZeroDivisionError: division by zero") == logging.ERROR
    assert level_of("(Worker pid=3) ERROR 12-06 [a.py:1] x") == logging.ERROR
    assert level_of("x.py:254: UserWarning: resource_tracker: leaked") == logging.WARNING
    assert level_of("(harness-engine-VLLMEngine pid=1) INFO 12-06 [a.py:1] x") == logging.INFO
    assert visible("\x1b[32mLoading 0%\rLoading 100%\r") == "Loading 100%"
