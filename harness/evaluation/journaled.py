"""The LM the loop hands lm-eval for one dataset: answers from the request journal first, the rest
from the engine, in slices whose answers are journaled as each comes back whole.

Every engine goes through it (the HF model in process, an engine in its own process, data-parallel
replicas): it sends every request batch through the run's gate (``harness/evaluation/gate.py``) to
``engine.answer``, which returns the answers with their token counts, and takes what lm-eval asks
of the model besides requests (tokenizer name, chat templates, rank) from ``engine.lm``. lm-eval
asks an ``LM`` for all requests of one type in one call; sent as one call, a run killed at 90%
of it would have journaled nothing, so the requests the journal cannot answer go to the engine in
slices sized to take about ``strategy.journal_slice_s`` each (the first is small, the next sized
from the throughput measured; vLLM keeps its batch full within a slice). Each answered slice is
counted in the dataset's ``RequestMeter`` with the token counts the engine returned.

A request's key is a hash of its type, its arguments (context and continuation, or context and
generation settings) and its occurrence: the n-th identical request of the dataset is its own
record, so lm-eval's repeats of one prompt never share an answer. Kept only what is certainly
right: answers that came back whole (a slice that raised, the engine died or was killed in it,
journals nothing), and no sampled generation unless the run fixes a seed.

Importing this module imports lm-eval (the class derives from its ``LM``).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from typing import Any

from harness.engines.base import Engine, RequestMeter, retries_of
from harness.evaluation.gate import EngineGate
from harness.record.journal import RequestJournal

FIRST_SLICE = 64
"""Requests in the first slice sent to the engine, before its throughput is known."""
MAX_SLICE = 16384
"""The largest slice, however fast the engine."""


def _lm_base() -> type:
    from lm_eval.api.model import LM

    return LM


def request_identity(op: str, args: tuple[Any, ...]) -> str:
    """A hash of one request's type and arguments (generation settings included)."""
    if all(isinstance(a, str) for a in args):  # loglikelihood's: each text, length-prefixed
        text = op + "".join(f"|{len(a)}:{a}" for a in args)
    else:
        text = json.dumps([op, args], sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(text.encode(errors="surrogatepass")).hexdigest()[:32]


def request_key(identity: str, occurrence: int) -> str:
    """The journal key of one request: its identity and occurrence index (the n-th identical
    request of the dataset is its own record)."""
    return identity if occurrence == 0 else f"{identity}.{occurrence}"


def is_sampled(op: str, args: tuple[Any, ...]) -> bool:
    """A generation that samples (its answer is one draw, not the answer)."""
    if op != "generate_until" or len(args) < 2 or not isinstance(args[1], dict):
        return False
    settings = args[1]
    do_sample = settings.get("do_sample")
    try:
        temperature = float(settings.get("temperature") or 0.0)
    except (TypeError, ValueError):
        return True  # what cannot be read is not trusted
    return do_sample is True or (do_sample is not False and temperature > 0)


def _answer(op: str, stored: Any) -> Any:
    """A journaled answer as the engine gives it (JSON turned the loglikelihood tuple into a
    list)."""
    return tuple(stored) if op == "loglikelihood" else stored


class JournaledLM(_lm_base()):  # type: ignore[misc]
    """One dataset's ``LM``: journal first, then the engine, in slices, through the gate.

    Args:
        engine: the resident engine (its ``lm`` answers lm-eval's questions besides requests).
        journal: the dataset's journal, not yet opened.
        session: facts of this run, written before its records (who wrote what).
        gate: the run's way to ``engine.answer`` (merged with the other datasets in flight);
            None: a pass-through gate of its own.
        seeded: the run fixes a seed, so sampled generations may be journaled too.
        slice_s: about how long one slice sent to the engine should take.
        meter: counts what this dataset sends to the engine (requests, tokens); None: one of
            its own (``meter``).
    """

    def __init__(
        self,
        engine: Engine,
        journal: RequestJournal,
        session: dict[str, Any],
        gate: EngineGate | None = None,
        seeded: bool = False,
        slice_s: float = 5.0,
        meter: RequestMeter | None = None,
    ) -> None:
        super().__init__()
        self._inner = engine.lm
        self._gate = gate if gate is not None else EngineGate(engine)
        self.meter = meter if meter is not None else RequestMeter()
        """What this dataset sent to the engine: each answered slice, with its tokens."""
        self._journal = journal
        contents = journal.read()
        self._answers = contents.answers
        self.sources = contents.sources
        """The sessions whose records this dataset could use, with their counts."""
        self.from_journal = 0
        """Requests answered from the journal in this run."""
        self._seeded = seeded
        self._slice_s = slice_s
        self._seen: Counter[str] = Counter()
        self._slice = FIRST_SLICE
        journal.open(session)

    def loglikelihood(self, requests: list[Any], disable_tqdm: bool = False) -> list[Any]:
        return self._answer_all("loglikelihood", requests)

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[Any]:
        return self._answer_all("loglikelihood_rolling", requests)

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[Any]:
        return self._answer_all("generate_until", requests)

    def _answer_all(self, op: str, requests: list[Any]) -> list[Any]:
        """Every request's answer: the journal's where it has one, the engine's for the rest."""
        answers: list[Any] = [None] * len(requests)
        missing: list[tuple[int, str | None]] = []  # (position, key; None: never journaled)
        for i, request in enumerate(requests):
            args = tuple(request.args)
            identity = request_identity(op, args)
            key = request_key(identity, self._seen[identity])
            self._seen[identity] += 1
            if is_sampled(op, args) and not self._seeded:
                missing.append((i, None))
            elif key in self._answers:
                answers[i] = _answer(op, self._answers.pop(key))
                self.from_journal += 1
            else:
                missing.append((i, key))
        start = 0
        while start < len(missing):
            part = missing[start : start + self._slice]
            sent = [requests[i] for i, _ in part]
            began = time.perf_counter()
            try:
                answered = self._gate.send(op, sent)
            finally:  # a slice that failed spent its retries too
                self.meter.retried += retries_of(sent)
            self._resize(len(part), time.perf_counter() - began)
            got = answered.answers  # as many as sent: the gate checks
            self.meter.record(op, answered)
            for (i, _), answer in zip(part, got, strict=True):
                answers[i] = answer
            self._journal.append(
                (key, answer) for (_, key), answer in zip(part, got, strict=True) if key
            )
            start += len(part)
        return answers

    def _resize(self, sent: int, took: float) -> None:
        """The next slice's size, from this one's throughput."""
        if sent < self._slice:  # a short last slice says little about throughput
            return
        rate = sent / max(took, 1e-3)
        self._slice = max(FIRST_SLICE, min(MAX_SLICE, int(rate * self._slice_s)))

    # What lm-eval asks of the model besides requests: the engine's own answers.
    @property
    def rank(self) -> int:
        return int(getattr(self._inner, "rank", 0))

    @property
    def world_size(self) -> int:
        return int(getattr(self._inner, "world_size", 1))

    @property
    def tokenizer_name(self) -> str:
        return str(self._inner.tokenizer_name)

    def chat_template(self, chat_template: bool | str = False) -> str | None:
        result = self._inner.chat_template(chat_template)
        return None if result is None else str(result)

    def apply_chat_template(
        self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True
    ) -> Any:
        """The engine's own: a string, or what its requests carry instead (lm-eval's chat API
        models keep the conversation as a ``JsonChatStr``, sent as messages, never as text)."""
        return self._inner.apply_chat_template(
            chat_history, add_generation_prompt=add_generation_prompt
        )

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # never recurse through a half-built instance
            raise AttributeError(name)
        return getattr(self._inner, name)
