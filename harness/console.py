"""What a run shows on the console, and what it records in the run directory's log file.

The console is quiet by default: one line per phase (``say``: the plan, the model load, each
dataset's start and verdict, the summary table) on stdout, and every warning and error on stderr.
With ``verbose=true``, or when stdout is a terminal, the console also shows every library's INFO
records (lm-eval's among them) and the per-request progress bars.

The log file (``<run dir>/harness.log``, Hydra's file handler, set in ``hydra.job_logging`` in
conf/config.yaml) always gets the whole story: every record at INFO and above, lm-eval's included,
and every phase line (from the ``harness.phase`` logger, which the console handler skips because
``say`` has already printed it).
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from typing import Any

PHASE_LOGGER = "harness.phase"
"""The logger that records phase lines in the log file."""

_phase = logging.getLogger(PHASE_LOGGER)
_phase.addHandler(logging.NullHandler())  # unconfigured logging: no second copy via lastResort

_bars_off = False
"""Whether every tqdm progress bar in this process is off (quiet console)."""

# Libraries that print through a console handler of their own (not reaching the log file, and
# for datasets and the hub, printed twice): the module whose import installs that handler, and
# the loggers it is installed on.
_OWN_HANDLERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "datasets": ("datasets.utils.logging", ("datasets",)),
    "huggingface_hub": ("huggingface_hub.utils.logging", ("huggingface_hub",)),
    "transformers": ("transformers.utils.logging", ("transformers",)),
    "mlflow": ("mlflow", ("mlflow", "alembic", "sqlalchemy.engine", "huey")),
}


def chatty(verbose: bool) -> bool:
    """Whether the console shows INFO records and progress bars: ``verbose`` or a terminal."""
    return verbose or sys.stdout.isatty()


ENGINE_OUTPUT_LOGGER = "harness.engine.output"
"""The logger of what an engine's own process printed (``harness.engines.process.output``)."""

REPEATING: tuple[tuple[str, str, str], ...] = (
    (
        "datasets",
        r"^(Using the latest cached version of the dataset|Found the latest cached dataset)",
        'datasets read {n} offline cache notice(s) ("Using the latest cached version ...")',
    ),
    (
        "lm_eval",
        r"Left truncation applied|Truncating context from|Reducing max_gen_toks",
        "lm-eval truncated prompts to fit the model's length ({n} warning(s))",
    ),
    (ENGINE_OUTPUT_LOGGER, r"", "the engine's own process logged {n} warning(s)"),
)
"""Third-party warnings that come by the dozen (one per dataset, per request, per engine
start-up line): the logger (or its parent), the message pattern, and the one line that counts
them on a quiet console. Each is kept whole in harness.log; ``verbose=true`` shows each."""

_collapsed: dict[str, list[Any]] = {}
"""Warnings kept off a quiet console so far: their summary line's key -> [count, summary]."""


def _collapse_key(record: logging.LogRecord) -> tuple[str, str] | None:
    """A warning a quiet console counts instead of showing: (key, summary template); None to
    show it. A named repeating kind, or any third-party warning whose text (digits aside) was
    already shown once."""
    import re

    name, message = record.name, record.getMessage()
    for logger, pattern, summary in REPEATING:
        if (name == logger or name.startswith(logger + ".")) and re.search(pattern, message):
            return logger + pattern, summary
    if name.startswith("harness") or record.levelno >= logging.ERROR:
        return None
    template = re.sub(r"\d+", "#", message)[:200]
    key = f"{name}:{template}"
    if key not in _collapsed:
        _collapsed[key] = [0, f"{{n}} more warning(s) like: {message[:120]}"]
        return None  # the first is shown; its repeats are counted
    return key, _collapsed[key][1]


class ConsoleFilter(logging.Filter):
    """The console handler's filter: warnings and errors always, INFO only when chatty, and
    never a phase record (``say`` has printed it). When not chatty, warnings that repeat
    (``REPEATING``, and a warning's repeats) are counted instead, for
    :func:`summarise_collapsed`; errors are never held back."""

    def __init__(self, show_info: bool = False) -> None:
        super().__init__()
        self.show_info = show_info

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == PHASE_LOGGER:
            return False
        if self.show_info:
            return True
        if record.levelno != logging.WARNING:
            return record.levelno > logging.WARNING
        seen = getattr(record, "_harness_collapsed", None)
        if seen is not None:  # a second console handler: counted once
            return not seen
        collapse = _collapse_key(record)
        record._harness_collapsed = collapse is not None
        if collapse is not None:
            key, summary = collapse
            _collapsed.setdefault(key, [0, summary])[0] += 1
        return collapse is None


def summarise_collapsed() -> None:
    """One warning line on the console for each kind of warning a quiet console counted (the
    records themselves are in harness.log), then start counting afresh."""
    lines = [
        summary.replace("{n}", str(count)) + " (see harness.log; verbose=true shows each)"
        for count, summary in _collapsed.values()
        if count > 0
    ]
    _collapsed.clear()
    for line in lines:
        say(f"warning: {line}", err=True, level=logging.WARNING)


class MaskedStream:
    """A text stream that masks what it is given before writing it on (``--cfg job`` prints the
    composed config, where a URI may hold a password)."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        from harness.secrets import mask

        return int(self.stream.write(mask(text)))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


class LogFile(logging.FileHandler):
    """``harness.log``: a FileHandler that, when a record cannot be written (its disk is full),
    says so once on stderr and writes no more, instead of printing Python's "Logging error"
    traceback for every record after."""

    def handleError(self, record: logging.LogRecord) -> None:
        if getattr(self, "_gave_up", False):
            return
        self._gave_up = True
        error = sys.exc_info()[1]
        print(
            f"warning: {self.baseFilename}: could not write the log file ({error}); it stops "
            "here, the run goes on (its console and results are unaffected)",
            file=sys.stderr,
        )
        self.setLevel(logging.CRITICAL + 1)


def _is_console(handler: logging.Handler) -> bool:
    streams = (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__)
    return (
        isinstance(handler, logging.StreamHandler)
        and not isinstance(handler, logging.FileHandler)
        and getattr(handler, "stream", None) in streams
    )


def configure(verbose: bool, draws_bars: bool = True) -> bool:
    """Set this run's console up: what the root's console handlers show, and whether progress
    bars are drawn. Returns whether the console is chatty.

    Args:
        draws_bars: whether anything of this run may draw a progress bar; plan-only loads no
            library that does, and gating tqdm costs its import (about 15 ms of a plan).
    """
    from harness.secrets import mask_handlers

    loud = chatty(verbose)
    mask_handlers()  # every log line, the file's included, with its secrets masked
    for handler in logging.getLogger().handlers:
        if _is_console(handler):
            for old in [f for f in handler.filters if isinstance(f, ConsoleFilter)]:
                handler.removeFilter(old)
            handler.addFilter(ConsoleFilter(show_info=loud))
    global _bars_off
    _bars_off = not loud
    if not loud:
        import atexit

        atexit.unregister(summarise_collapsed)
        atexit.register(summarise_collapsed)  # what a run that ends early counted
    if _bars_off and draws_bars:
        _gate_progress_bars()
    return loud


def _gate_progress_bars() -> None:
    """Make every tqdm bar obey ``_bars_off``, whatever ``disable=`` its caller passes.

    Every progress bar a run draws is a tqdm bar: lm-eval's (building contexts, tokenizing,
    running requests), transformers' "Loading weights", the hub's and datasets' downloads. The
    switches they offer do not reach all of them: TQDM_DISABLE is overridden by an explicit
    ``disable=False``, which lm-eval passes to its per-request bars (and to the inner bars of
    ``loglikelihood_rolling`` even when asked for none), and is read only when tqdm is imported.
    """
    from tqdm import std

    if getattr(std.tqdm.__init__, "_harness_gate", False):
        return
    original = std.tqdm.__init__

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        if _bars_off:
            kwargs["disable"] = True
        original(self, *args, **kwargs)

    __init__._harness_gate = True  # type: ignore[attr-defined]
    std.tqdm.__init__ = __init__


def say(
    text: str,
    *,
    record: str | None = None,
    show: bool = True,
    err: bool = False,
    level: int = logging.INFO,
) -> None:
    """A phase line: printed on the console and recorded in the run's log file.

    Args:
        text: what the console shows (several lines are fine).
        record: what the log file records instead, when it should hold more than the console.
        show: False records it in the log file only.
        err: print to stderr instead of stdout.
        level: the record's level in the log file.
    """
    from harness.secrets import mask

    text = mask(text)
    if show:  # one write a line: datasets in flight together print whole lines
        stream = sys.stderr if err else sys.stdout
        stream.write(text + "\n")
        stream.flush()
    message = text if record is None else mask(record)
    _phase.log(level, f"\n{message}" if "\n" in message else message)  # a table stays aligned


def route_library_logs(*libraries: str) -> None:
    """Send these libraries' records through the root's handlers (the filtered console and the
    log file) instead of the console handler each installs on import.

    Imports each library's logging module first (so its own set-up is done and will not redo
    this); a library that is not installed is skipped. Keys: ``datasets``, ``huggingface_hub``,
    ``transformers``, ``mlflow``.
    """
    for library in libraries:
        module, loggers = _OWN_HANDLERS[library]
        try:
            importlib.import_module(module)
        except ImportError:
            continue
        for name in loggers:
            logger = logging.getLogger(name)
            for handler in list(logger.handlers):
                if isinstance(handler, logging.StreamHandler) and not isinstance(
                    handler, logging.FileHandler
                ):
                    logger.removeHandler(handler)
            logger.propagate = True


def _git_commit_hash() -> str | None:
    """lm-eval's ``get_git_commit_hash`` (the current directory's commit, stored in each
    result), without git's "fatal: not a git repository" on stderr outside a checkout."""
    import subprocess

    from lm_eval.loggers.utils import get_commit_from_path

    try:
        done = subprocess.run(
            ["git", "describe", "--always"], capture_output=True, text=True, check=True
        )
    except (subprocess.CalledProcessError, FileNotFoundError):
        return get_commit_from_path(os.getcwd())
    return done.stdout.strip()


def quiet_lm_eval_git_probe() -> None:
    """Make ``simple_evaluate`` look up the git commit without printing git's complaints."""
    import lm_eval.evaluator

    lm_eval.evaluator.get_git_commit_hash = _git_commit_hash
