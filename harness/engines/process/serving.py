"""Where an engine lives (its own process, a Ray actor): how one operation is answered there.

What crosses from the harness is an operation name and plain data. lm-eval's request methods read
only ``Instance.args`` (``HFLM`` and ``VLLM`` take the context, continuation and generation
arguments from it, nothing else; task documents stay in the harness process), so requests travel
as those tuples and are rebuilt here as ``Request``. A batch is answered by the engine's own
``answer``, which counts each request's tokens where the tokenizer is: the answers and their
token counts come back in one reply.
"""

from __future__ import annotations

import traceback
from collections.abc import Sequence
from typing import Any

from harness.engines.base import Answered, Engine

PING = ("1", {"max_gen_toks": 1, "until": [], "do_sample": False})
"""The health check's request: one greedy token after a one-character prompt."""


class Request:
    """What lm-eval's request methods read of an ``Instance``: its ``args`` (and, for a
    ``VLLM`` with thinking enabled, a task name)."""

    __slots__ = ("args", "task_name")

    def __init__(self, args: tuple[Any, ...]) -> None:
        self.args = args
        self.task_name = None


def as_args(requests: Sequence[Any]) -> list[tuple[Any, ...]]:
    """What crosses for a batch of requests: each one's ``args`` tuple."""
    return [tuple(r.args) for r in requests]


def as_requests(payload: Sequence[Sequence[Any]]) -> list[Request]:
    """The requests ``as_args`` sent, rebuilt where the engine is."""
    return [Request(tuple(args)) for args in payload]


def error_reply(err: BaseException) -> tuple[str, str, str, str]:
    """An exception as the reply that carries it back: type, message, traceback."""
    text = str(err).strip()
    return ("error", type(err).__name__, text, traceback.format_exc())


def serve(engine: Engine, op: str, payload: Any) -> Any:
    """Answer one operation on an in-process engine (a request batch, describe, an attribute)."""
    if op == "answer":  # (request type, args of each request) -> Answered
        request_type, args = payload
        answered: Answered = engine.answer(request_type, as_requests(args))
        return answered
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
