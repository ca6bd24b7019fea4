"""What Ray and the replicas' actors print, taken off the console and into the run's log.

Ray prints in two ways on the driver: its own ``ray`` logger (a console handler of its own,
"Started a local Ray instance." at INFO), and every worker's stdout and stderr forwarded by its
log monitor (``log_to_driver``: an HF replica's "Loading weights" bars, a vLLM replica's start-up
log) and printed by a handler it registers on its stream dispatcher. Without ``log_to_driver``
the replicas' output reached neither the console nor ``harness.log`` (only Ray's session files).

Here Ray's logger goes through the root's handlers (the filtered console and ``harness.log``),
and each forwarded line is logged under ``harness.engine.output``, graded by level as an
engine process's own output is (``harness.engines.process.output``): every line in
``harness.log``, errors always on the console, warnings as one counted line, INFO and progress
bars (their last frame) only with ``verbose=true``.
"""

from __future__ import annotations

import logging
from typing import Any

from harness.console import ENGINE_OUTPUT_LOGGER
from harness.engines.process.output import level_of, visible

RAY_PRINTER = "ray_print_logs"
"""The name Ray 2.60's ``worker.connect`` registers its printer of workers' lines under."""
OUR_PRINTER = "harness_engine_output"


def init_ray(**kwargs: Any) -> None:
    """``ray.init`` with Ray's output logged as the run's (module docstring)."""
    import ray

    logging.getLogger("ray").propagate = True  # Ray's import turned it off
    # configure_logging=False: Ray clears its own console handler from the "ray" logger
    ray.init(include_dashboard=False, log_to_driver=True, configure_logging=False, **kwargs)
    log_worker_output()


def log_worker_output() -> None:
    """Replace Ray's printer of the workers' forwarded lines by :func:`log_lines`."""
    from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher

    dispatcher.remove_handler(RAY_PRINTER)
    dispatcher.remove_handler(OUR_PRINTER)
    dispatcher.add_handler(OUR_PRINTER, log_lines)


def stop_logging_worker_output() -> None:
    import sys

    logging_module = sys.modules.get("ray._private.ray_logging")
    if logging_module is not None:
        logging_module.global_worker_stdstream_dispatcher.remove_handler(OUR_PRINTER)


def actor_logs_to_stderr() -> None:
    """In a replica's actor: its records (the engine process's output logged there among them)
    printed on stderr at INFO and above, each line led by its level, so that Ray forwards them
    and :func:`log_lines` grades them (a Ray worker's root logger has no handler: Python's
    last resort would print warnings alone, without their level)."""
    import sys

    root = logging.getLogger()
    if any(getattr(h, "_harness_actor", False) for h in root.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s [%(name)s] %(message)s"))
    handler._harness_actor = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(min(root.level or logging.INFO, logging.INFO))


def log_lines(data: dict[str, Any]) -> None:
    """One batch of a worker's lines (Ray's dict: ``lines``, ``pid``, ``actor_name``,
    ``task_name``, ``is_err``; the autoscaler's and the raylet's too), each logged as the
    engine's output, named after its actor."""
    from ray._private.worker import filter_autoscaler_events

    out = logging.getLogger(ENGINE_OUTPUT_LOGGER)
    who = data.get("actor_name") or data.get("task_name") or "ray"
    pid = data.get("pid")
    lines = data.get("lines") or []
    if pid == "autoscaler":  # its status report every few seconds: only its events, as Ray
        lines = list(filter_autoscaler_events(lines))
    for raw in lines:
        line = visible(str(raw))
        if line:
            out.log(level_of(line), "[%s pid=%s] %s", who, pid, line)
