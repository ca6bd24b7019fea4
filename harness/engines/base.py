"""The engine protocol: what the evaluation loop needs from any way of serving a model.

Two kinds of engine, written down here once:

- ``Engine``: a model loaded once and kept resident. ``lm`` is an lm-eval ``LM`` (what
  ``simple_evaluate`` is handed attributes from: ``tokenizer_name``, chat templates, ``rank``);
  the loop sends every request batch through ``answer``, which returns the answers with their
  token counts, so nothing crosses a process boundary twice.
- ``RemoteEngine``: an engine that lives somewhere else (a process of its own, Ray actors, later
  a server over HTTP). It can be asked whether it is healthy (``check``), rebuilt (``revive``) and
  killed (``kill``); when it is gone, its calls raise ``EngineDied``, which the loop catches by
  type and answers by rebuilding it once and resuming the dataset from its journal.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

REQUEST_TYPES = ("loglikelihood", "loglikelihood_rolling", "generate_until")
"""lm-eval's three request methods, the operations ``Engine.answer`` takes."""
HEALTH_TIMEOUT_S = 300.0
"""Longest a remote engine's health check may take: the first request to a fresh vLLM engine
warms it up (measured 3-25 s on 2 CPU cores)."""


class EngineDied(RuntimeError):
    """The engine (its process, its actors) ended while the harness still needed it."""


def stalled(limit: float | None) -> EngineDied:
    """What a remote engine raises once the stall watchdog killed it: it answered nothing for
    ``limit`` seconds (``Plan.stall_timeout_s``) while a dataset ran. The loop rebuilds it once and
    resumes the dataset from its journal."""
    return EngineDied(
        f"the engine answered nothing for {limit or 0:.0f}s while a dataset ran (stalled; "
        "strategy.stall_timeout_s): killed"
    )


STALL_GROWTH = 3.0
"""How many times the slowest call answered so far the stall watchdog allows the next one (the
plan's ``SLICE_ALLOWANCE``): a healthy engine slower than the plan assumed (a loaded machine,
longer prompts later in a dataset) is not taken for a stalled one."""


class StallWatch:
    """The stall watchdog's limit on one call: the plan's (``Plan.stall_timeout_s``, at least
    its floor), grown during the run to ``STALL_GROWTH`` times the slowest call answered. A
    stalled engine answers nothing, so only a healthy engine's calls ever raise it.

    Args:
        planned: the plan's limit; None or 0: no limit.
    """

    def __init__(self, planned: float | None) -> None:
        self.planned = planned or None
        self.slowest_s = 0.0
        """The longest call answered so far, in seconds."""

    @property
    def limit(self) -> float | None:
        """The limit on the next call (None: no limit)."""
        if self.planned is None:
            return None
        return max(self.planned, round(STALL_GROWTH * self.slowest_s, 1))

    def answered(self, seconds: float) -> None:
        """A call was answered after ``seconds``."""
        self.slowest_s = max(self.slowest_s, seconds)


class EngineError(RuntimeError):
    """An exception raised inside a remote engine; its traceback is in ``remote``."""

    def __init__(self, error_type: str, message: str, remote: str) -> None:
        super().__init__(f"{error_type}: {message}")
        self.error_type = error_type
        self.remote = remote


@dataclass
class Answered:
    """An engine's answers to one batch of requests of one type, with their token counts."""

    answers: list[Any]
    """lm-eval's answers, one per request, in order."""
    prompt_tokens: list[int]
    """Tokens the model read for each request (its context and scored continuation)."""
    generated_tokens: list[int]
    """Tokens the model produced for each request (0 but for ``generate_until``)."""

    def part(self, start: int, stop: int) -> Answered:
        """The answers of requests ``start`` to ``stop`` (one dataset's slice of a merged call)."""
        return Answered(
            self.answers[start:stop],
            self.prompt_tokens[start:stop],
            self.generated_tokens[start:stop],
        )


RETRIED = "harness_retried"
"""The attribute an engine with a transport marks a request with: ``{HTTP request: retries}``
for each HTTP request that carried it and was sent again (``note_retries``)."""


def note_retries(request: Any, http_request: int, retries: int) -> None:
    """Mark ``request`` as carried by HTTP request number ``http_request`` (unique in the
    process), which was sent ``retries`` times again: the dataset that sent ``request`` counts
    them (``retries_of``), whether the call then succeeded or failed."""
    marks = getattr(request, RETRIED, None)
    if marks is None:
        marks = {}
        setattr(request, RETRIED, marks)
    marks[http_request] = retries


def retries_of(requests: Sequence[Any]) -> int:
    """The retries of the HTTP requests that carried any of ``requests``, each HTTP request
    once however many of them it carried; the marks are taken (a second call counts 0)."""
    calls: dict[int, int] = {}
    for request in requests:
        marks = getattr(request, RETRIED, None)
        if marks:
            calls.update(marks)
            setattr(request, RETRIED, None)
    return sum(calls.values())


class Engine(Protocol):
    """A model loaded once and kept resident while every dataset is evaluated."""

    lm: Any
    """The engine's lm-eval ``LM``: what lm-eval asks of the model besides requests
    (``tokenizer_name``, ``chat_template``, ``apply_chat_template``, ``rank``)."""

    def answer(self, op: str, requests: Sequence[Any]) -> Answered:
        """Answer ``requests`` (lm-eval ``Instance``-likes: only ``args`` is read) of request type
        ``op`` (one of ``REQUEST_TYPES``), with the tokens each read and produced."""
        ...

    def describe(self) -> dict[str, Any]:
        """Facts about the loaded engine (kind, device, dtype, parallel sizes) for the record."""
        ...

    def close(self) -> None:
        """Free the model (and its device memory); the engine is unusable afterwards."""
        ...


@runtime_checkable
class RemoteEngine(Engine, Protocol):
    """An engine that lives outside this process: it can be checked, rebuilt and killed."""

    def call(self, op: str, payload: Any = None, timeout: float | None = None) -> Any:
        """Send one operation to the engine and wait for its answer; ``EngineDied`` when the
        engine is gone, ``EngineError`` when it raised, ``TimeoutError`` past ``timeout``."""
        ...

    def check(self, timeout: float = HEALTH_TIMEOUT_S) -> None:
        """The health check (one request for one generated token); raises as ``call`` does."""
        ...

    def revive(self, rebuild: bool = True) -> bool:
        """Check the engine and, if it is unhealthy and ``rebuild`` allows, build it anew;
        True when it rebuilt. Raises what ``check`` raised when it may not rebuild."""
        ...

    def kill(self) -> None:
        """Kill the engine at once (a stalled engine; ``revive`` then rebuilds it)."""
        ...


def load_factory(factory: str) -> Callable[..., Engine]:
    """The engine class a ``"module:Class"`` string names (``ENGINES``' factories), imported."""
    module, _, name = factory.partition(":")
    return getattr(importlib.import_module(module), name)


def answer_with(
    lm: Any, op: str, requests: Sequence[Any], token_lengths: Callable[[Sequence[str]], list[int]]
) -> Answered:
    """``Engine.answer`` for an engine whose ``lm`` answers in this process: ``lm``'s own answers,
    counted with ``token_lengths`` (each text's tokens under the model's tokenizer)."""
    if op not in REQUEST_TYPES:
        raise ValueError(f"unknown request type {op!r}: one of {', '.join(REQUEST_TYPES)}")
    if not requests:
        return Answered([], [], [])
    answers = list(getattr(lm, op)(list(requests), disable_tqdm=True))
    if len(answers) != len(requests):
        raise RuntimeError(f"the engine answered {len(answers)} of {len(requests)} requests")
    if op == "generate_until":
        prompt = token_lengths([r.args[0] for r in requests])
        texts = [a if isinstance(a, str) else "" for a in answers]
        generated = token_lengths(texts)
    else:  # loglikelihood args are (context, continuation); rolling args are (text,)
        per_arg = token_lengths([a for r in requests for a in r.args[:2]])
        prompt, at = [], 0
        for request in requests:
            width = len(request.args[:2])
            prompt.append(sum(per_arg[at : at + width]))
            at += width
        generated = [0] * len(requests)
    return Answered(answers, prompt, generated)


def lengths_with(tokenizer: Any, texts: Sequence[str]) -> list[int]:
    """Each text's tokens under a Hugging Face tokenizer, without special tokens (what every
    engine reports, so throughput compares across engines)."""
    if not texts:
        return []
    return [len(ids) for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]]


class AnswersInProcess:
    """``Engine.answer`` for an engine whose ``lm`` (lm-eval's HF or vLLM model) answers in this
    process and holds the model's tokenizer (``lm.tokenizer``)."""

    lm: Any

    def answer(self, op: str, requests: Sequence[Any]) -> Answered:
        return answer_with(self.lm, op, requests, self.token_lengths)

    def token_lengths(self, texts: Sequence[str]) -> list[int]:
        return lengths_with(self.lm.tokenizer, texts)


@dataclass
class RequestMeter:
    """Counts the requests and tokens one dataset sends to the engine."""

    requests: int = 0
    """Requests served since the last reset."""
    prompt_tokens: int = 0
    """Tokens the model read (contexts and scored continuations)."""
    generated_tokens: int = 0
    """Tokens the model produced (generate_until outputs)."""
    by_type: dict[str, int] = field(default_factory=dict)
    """Requests per lm-eval request type."""
    retried: int = 0
    """HTTP requests the engine's transport sent again that carried requests of this dataset
    (``retries_of``; one shared with another dataset's requests counts for both)."""

    def reset(self) -> None:
        self.requests = self.prompt_tokens = self.generated_tokens = self.retried = 0
        self.by_type = {}

    def record(self, request_type: str, answered: Answered) -> None:
        """Count one batch the engine answered."""
        count = len(answered.answers)
        self.requests += count
        self.by_type[request_type] = self.by_type.get(request_type, 0) + count
        self.prompt_tokens += sum(answered.prompt_tokens)
        self.generated_tokens += sum(answered.generated_tokens)


def recordable(value: Any) -> Any:
    """A value read back from an engine as summary.json can hold it: plain as it is, else its
    text (an enum, a config object)."""
    return value if isinstance(value, bool | int | float | str | type(None)) else str(value)
