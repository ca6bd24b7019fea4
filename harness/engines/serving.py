"""Where an engine lives (its own process, a Ray actor): how one operation is answered there.

What crosses from the harness is an operation name and plain data: lm-eval's request methods read
only ``Instance.args``, so requests travel as those tuples and are rebuilt here as ``Request``.
"""

from __future__ import annotations

import importlib
import traceback
from typing import Any

REQUEST_METHODS = ("loglikelihood", "loglikelihood_rolling", "generate_until")
PING = ("1", {"max_gen_toks": 1, "until": [], "do_sample": False})
"""The health check's request: one greedy token after a one-character prompt."""


class Request:
    """What lm-eval's request methods read of an ``Instance``: its ``args`` (and, for a
    ``VLLM`` with thinking enabled, a task name)."""

    __slots__ = ("args", "task_name")

    def __init__(self, args: tuple[Any, ...]) -> None:
        self.args = args
        self.task_name = None


def load_factory(factory: str) -> Any:
    """The callable a ``"module:name"`` string names (an engine class)."""
    module, _, name = factory.partition(":")
    return getattr(importlib.import_module(module), name)


def error_reply(err: BaseException) -> tuple[str, str, str, str]:
    """An exception as the reply that carries it back: type, message, traceback."""
    text = str(err).strip()
    return ("error", type(err).__name__, text, traceback.format_exc())


def serve(engine: Any, op: str, payload: Any) -> Any:
    """Answer one operation on an in-process engine (a request batch, describe, an attribute)."""
    if op in REQUEST_METHODS:
        requests = [Request(tuple(args)) for args in payload]
        return list(getattr(engine.lm, op)(requests, disable_tqdm=True))
    if op == "count_tokens":
        return engine.count_tokens(payload)
    if op == "describe":
        return engine.describe()
    if op == "attr":  # tokenizer_name, max_length, ...: plain values only
        return getattr(engine.lm, payload)
    if op == "call":  # chat_template(...), apply_chat_template(...), get_model_info()
        name, args, kwargs = payload
        return getattr(engine.lm, name)(*args, **kwargs)
    if op == "ping":  # the health check: a one-token request through the model
        return engine.lm.generate_until([Request(PING)], disable_tqdm=True)
    raise ValueError(f"unknown engine operation {op!r}")
