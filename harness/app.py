"""Entry point: Hydra composes the config, ``harness.runner.run`` does the work (tests call it
directly). Plan-only takes a quicker way through Hydra where it can (``quick_plan``)."""

from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig

from harness import console
from harness.config.store import compose_once, libyaml_loading, register_configs
from harness.console import say
from harness.errors import ConfigError, HarnessError
from harness.paths import CONF_DIR
from harness.runner import run

__all__ = ["main", "run"]  # run: where older callers import it

_ENTERED: list[bool] = []
"""Set once Hydra has composed the config and called the task (``_hydra_entry``)."""


def run_said(cfg: DictConfig) -> int:
    """``run``, with bad input said in one line: the exit code (2 for bad input)."""
    from omegaconf.errors import OmegaConfBaseException

    try:
        return run(cfg)
    except HarnessError as err:
        say(f"error: {err}", err=True, level=logging.ERROR)
        return err.exit_code
    except OmegaConfBaseException as err:  # e.g. an interpolation that resolves to nothing
        say(f"error: the configuration does not resolve: {err}", err=True, level=logging.ERROR)
        return 2


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def _hydra_entry(cfg: DictConfig) -> int:
    _ENTERED.append(True)

    logging.captureWarnings(True)  # Python warnings go to the console and the log file too
    code = run_said(cfg)
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    # In a sweep one job's failure must not end the others: Hydra keeps the return value.
    if code and HydraConfig.get().mode != RunMode.MULTIRUN:
        sys.exit(code)
    if code:  # a sweep run by Hydra's basic launcher, in this process: main() exits non-zero
        from harness.sweep import record_exit

        record_exit(1)
    return code


def asks_quick_plan(argv: list[str]) -> bool:
    """Whether the command line is a plan-only run that ``quick_plan`` can serve: the last
    ``plan_only=`` word says true, and every word is an override of harness's own keys (no
    flag such as ``-m``, ``--cfg`` or ``--help``, no ``hydra.*`` key but the run directory)."""
    said = [w.split("=", 1)[1] for w in argv if w.lstrip("+").startswith("plan_only=")]
    if not said or said[-1].strip().lower() not in ("true", "yes", "on", "1"):
        return False
    for word in argv:
        if word.startswith("-"):
            return False
        key = word.lstrip("+~").split("=", 1)[0]
        if key.startswith("hydra") and key != "hydra.run.dir":
            return False
    return True


def quick_plan(argv: list[str]) -> int | None:
    """Plan-only without a Hydra job: the config composed with Hydra's compose API (the same
    files, overrides and schema as ``hydra.main``), then ``run``, which plans, prints the plan and
    writes ``plan.json`` in the run directory. Hydra's job around the task (logging set-up,
    ``.hydra/*.yaml``, ``harness.log``) is what plan-only does not need: about a quarter of
    its time (benchmarks/RESULTS.md, "Plan-only latency"). The config files are parsed by
    libyaml (``libyaml_loading``): a fifth of the compose.

    Returns:
        The exit code, or None where this way cannot serve: the config does not compose (Hydra's
        own way then says why, as it always has) or it is not plan-only after all.
    """
    import os

    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    # Hydra's logging configs are for its job's logging set-up, which this way does not do
    # (asks_quick_plan lets no hydra/* group through, so none is overridden here): 13% of compose.
    quiet = ["hydra/job_logging=none", "hydra/hydra_logging=none"]
    try:
        with (
            libyaml_loading(),
            initialize_config_dir(str(CONF_DIR), version_base="1.3", job_name="harness"),
        ):
            cfg = compose("config", overrides=[*argv, *quiet], return_hydra_config=True)
        if not cfg.get("plan_only"):
            return None
        with open_dict(cfg):  # what Hydra's run_job does before it calls the task
            cfg.hydra.runtime.output_dir = os.path.abspath(cfg.hydra.run.dir)
    except Exception:  # not said here: hydra.main composes it again and says why
        return None
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    _ENTERED.append(True)
    with libyaml_loading():  # the registry's model file, read by the planner
        return run_said(cfg)


def one_run_directory(argv: list[str]) -> None:
    """``output_dir=X`` makes X Hydra's run directory too, so that harness.log and ``.hydra/``
    are written beside the results, not in a second folder under outputs/runs (one run, one
    directory). A sweep (``-m``), or a run that sets ``hydra.run.dir`` itself, is left alone."""
    if "-m" in argv or "--multirun" in argv or any(a.startswith("hydra.run.dir=") for a in argv):
        return
    given = [a.split("=", 1)[1] for a in argv if a.lstrip("+").startswith("output_dir=")]
    if given and given[-1] not in ("", "null"):
        sys.argv.append(f"hydra.run.dir={given[-1]}")


def refuse_used_output_dir(argv: list[str]) -> None:
    """One run, one directory, said before Hydra's job writes ``harness.log`` and ``.hydra/``
    into a named ``output_dir`` that holds another run (``runner.checked.refuse_used_directory``
    decides, from the config composed as ``quick_plan`` composes it); exits 2 when refused."""
    import os
    from pathlib import Path

    from harness.record.rundir import RunDirectory

    if "-m" in argv or "--multirun" in argv or any(a.startswith("-") for a in argv):
        return
    given = [a.split("=", 1)[1] for a in argv if a.lstrip("+").startswith("output_dir=")]
    if not given or given[-1] in ("", "null"):
        return
    run_dir = RunDirectory(Path(os.path.expanduser(given[-1])).resolve())
    if not run_dir.holds_run():
        return
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf, open_dict

    from harness.runner.checked import refuse_used_directory
    from harness.secrets import mask_tree

    try:
        with (
            libyaml_loading(),
            initialize_config_dir(str(CONF_DIR), version_base="1.3", job_name="harness"),
        ):
            cfg = compose("config", overrides=argv)
        with open_dict(cfg):
            cfg.pop("hydra", None)
        typed = mask_tree(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True))
    except Exception:  # not said here: Hydra's own way composes it again and says why
        return
    try:
        refuse_used_directory(run_dir, typed)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


def main() -> None:
    """Console entry point (``harness`` and ``python -m harness``)."""
    import signal

    from harness.config import help as cli_help
    from harness.config.argv import (
        check_group_choices,
        output_problems,
        required_value_problems,
        searchpath_problems,
        unquoted_equals_problems,
        unselected_dataset_problems,
    )
    from harness.config.keys import argv_key_problems

    # `harness ... | head` should end quietly, as other command-line tools do.
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    argv = sys.argv[1:]
    problems = searchpath_problems(argv) + check_group_choices(argv)
    if not cli_help.only_prints(argv):  # --help and tab completion (-sc install=bash) run nothing
        problems += argv_key_problems(argv) + required_value_problems(argv) + output_problems(argv)
        problems += unselected_dataset_problems(argv) + unquoted_equals_problems(argv)
    from harness.sweep import argv_problems as sweep_argv_problems

    problems += sweep_argv_problems(argv)
    if problems:
        print(f"error: {ConfigError(problems)}", file=sys.stderr)
        sys.exit(2)
    register_configs()
    from harness.config.argv import with_task_source

    sys.argv[1:] = with_task_source(argv)  # any lm-eval task by its own name: dataset=[mmlu]
    one_run_directory(argv)
    refuse_used_output_dir(sys.argv[1:])  # before Hydra's job writes into another run's folder
    if any(a in ("--cfg", "-c") or a.startswith("--cfg=") for a in argv):
        sys.stdout = console.MaskedStream(sys.stdout)
    if asks_quick_plan(sys.argv[1:]):
        code = quick_plan(sys.argv[1:])
        if code is not None:
            sys.exit(code)
    compose_once(sys.argv[1:])
    cli_help.register()  # ${harness_help:...} in --help's page; resolved only when printed
    from omegaconf.errors import OmegaConfBaseException

    from harness.errors import Terminated, raise_terminated

    signal.signal(signal.SIGTERM, raise_terminated)  # ended as Ctrl-C ends a run
    try:
        _hydra_entry()
    except OmegaConfBaseException as err:  # Hydra resolving its own run dir from a bad value
        print(f"error: the configuration does not resolve: {err}", file=sys.stderr)
        sys.exit(2)
    except SystemExit as done:
        # Hydra exits 1 on a value of the wrong type or an override it cannot parse, before any
        # task ran (its message is printed above); bad input is exit code 2 everywhere.
        sweep = "-m" in argv or "--multirun" in argv  # a launcher's failure is not bad input
        if done.code == 1 and not _ENTERED and not sweep:
            print(
                "error: the command line does not compose (above: the override and why). Fix: "
                "the value's type or the override's syntax (`python -m harness --help` lists "
                "every key with its type)",
                file=sys.stderr,
            )
            sys.exit(2)
        raise
    except KeyboardInterrupt as err:  # the run already ended KILLED; one line, no traceback
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # leaving: a second Ctrl-C changes nothing
        terminated = isinstance(err, Terminated)
        say(  # the console and harness.log alike: the log tells the whole story
            f"interrupted ({'SIGTERM' if terminated else 'Ctrl-C'}): the run is marked KILLED; "
            "the same command resumes it (datasets already stored are not evaluated again)",
            err=True,
            level=logging.WARNING,
        )
        logging.shutdown()  # the log file's last line written before the exit
        sys.exit(Terminated.exit_code if terminated else 130)
    from harness.sweep import exit_code

    if exit_code():  # a sweep in which a job failed or was refused (harness/sweep)
        sys.exit(exit_code())
