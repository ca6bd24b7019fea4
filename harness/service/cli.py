"""The serve command: its help page and the dispatch to start, list and stop."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from harness.console import say
from harness.errors import HarnessError
from harness.service.options import Action, parse

HELP = """\
harness.serve: keep a model up across runs, served by vLLM's own OpenAI server.

  python -m harness.serve model=M strategy=S tier=T [service.*=...] [outputs_root=DIR]
      compose and plan as `python -m harness` does (bad input: exit 2), start the server with
      the plan's deployment (tp/pp/dp, dtype, quantization, max_model_len, seed, engine_args),
      wait for it (start-up budget scaled by the model's size), health-check it (one token), and
      register it in DIR/services/<id>.json (mode 0600). It outlives this command. A later
      `python -m harness` run whose model and deployment match attaches to it instead of
      loading (the console says "attached to service <id> at <url>").
  python -m harness.serve model=M strategy=S tier=T hydra/launcher=slurm [hydra.launcher.*=...]
      the same as a SLURM job (submitted through submitit, as a sweep's job: GPUs and nodes from
      the plan, CPUs, memory, time limit and partition from the tier; hydra.launcher.partition,
      .timeout_min, .setup=[...], ... over them). It says whether the job is pending in the
      queue (and why) or loading; its server listens on the node's address and requires the
      API key harness generates (kept in the 0600 registry file only). Runs on any node attach
      to it; --stop cancels the job (scancel); a job that ended is seen dead (sacct/squeue).
  python -m harness.serve --list [outputs_root=DIR]       the services, with their status
  python -m harness.serve --stop ID|all [outputs_root=DIR]
      stop a service (or all of yours): its processes end, its registry entry goes

Settings of the service (service.KEY=VALUE):
  service.host=127.0.0.1        address it listens on; another (0.0.0.0) requires an API key,
                                which harness generates and keeps in the registry file
  service.port=null             its port; null: a free one (a restart keeps it)
  service.api_key=null          require a key; null: off loopback only; true: on loopback too
  service.startup_timeout_s=null  longest wait for ready; null: 300 s + 10 s per GB of weights
                                (x2 on the CPU)

Two serve commands of one deployment at once start one service: the second waits for the
first's and reuses it. A service whose serve command was killed before it was ready is ended
(its processes, its job) and shown dead by --list or the next serve command.

Examples:
  python -m harness.serve model=tiny_char strategy=vllm
  python -m harness model=tiny_char strategy=vllm dataset=[arith_mc]   # attaches, loads nothing
  python -m harness.serve model=llama3_1_8b strategy=vllm tier=small service.host=0.0.0.0
  python -m harness.serve model=llama3_1_70b strategy=tp4 tier=large hydra/launcher=slurm \
      'hydra.launcher.setup=["source /shared/harness/.venv/bin/activate"]'
  python -m harness.serve --stop all

docs/services.md tells the rest (matching, recovery, keys); `python -m harness --help` lists every
group and setting a run takes.
"""


def outputs_root(overrides: Sequence[str]) -> str:
    """``outputs_root=`` from the command line, else the run's default."""
    from harness.config.argv import override_value
    from harness.config.schema import RunConfig

    return override_value(overrides, "outputs_root") or RunConfig.outputs_root


def dispatch(argv: Sequence[str]) -> int:
    """Do what ``argv`` asks; the exit code. Bad input raises ``HarnessError`` (exit 2)."""
    args = parse(argv)
    if args.action == Action.help:
        print(HELP, end="")
        return 0
    if args.action == Action.list:
        from harness.service.manage import format_services

        print(format_services(outputs_root(args.overrides)))
        return 0
    if args.action == Action.stop:
        from harness.service.manage import stop

        return stop(outputs_root(args.overrides), args.stop)
    from harness.service.start import start

    return start(args.overrides, args.service)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m harness.serve``: bad input exits 2 with value, rule and fix; a server that
    failed to start exits 1; Ctrl-C while waiting leaves no server behind (exit 130)."""
    import signal

    from harness.errors import raise_terminated

    signal.signal(signal.SIGTERM, raise_terminated)
    try:
        return dispatch(sys.argv[1:] if argv is None else argv)
    except HarnessError as err:
        say(f"error: {err}", err=True, level=logging.ERROR)
        return err.exit_code
    except KeyboardInterrupt:
        print("interrupted: no service was left starting", file=sys.stderr)
        return 130
