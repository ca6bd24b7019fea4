"""lm-eval's own API models with the transport replaced: what an endpoint engine answers with.

``EndpointCompletions`` is lm-eval's ``LocalCompletionsAPI`` (``local-completions``) and
``EndpointChat`` its ``LocalChatCompletion``; everything that decides an answer is lm-eval's:
tokenizing and truncating the requests, the rolling windows, the payloads
(``_create_payload``), parsing log-probabilities and generations. Only the two methods that send
(``model_call`` when ``num_concurrent`` is 1, ``get_batched_requests`` otherwise) are replaced:
they go through harness's ``Transport`` (bounded retries of transport errors only, adaptive
concurrency, every retry counted, the stall watchdog), and lm-eval's own retry loop is given one
try. One check is added where lm-eval trusts the server: a loglikelihood answer must hold a
log-probability for every prompt token; a server that returns fewer (no echo of the prompt's
log-probabilities) fails the dataset instead of scoring chance.

Importing this module imports lm-eval (the classes derive from its API models).
"""

from __future__ import annotations

import contextlib
import copy
import threading
from collections.abc import Iterator
from typing import Any

from lm_eval.models.api_models import LMEVAL_MODEL_NONE_ANSWER_PLACEHOLDER
from lm_eval.models.openai_completions import LocalChatCompletion, LocalCompletionsAPI
from lm_eval.models.utils import chunks

from harness.engines.remote.transport import EndpointError, RetryCount, Transport

ROUTES = {"completions": "completions", "chat": "chat/completions"}
"""The route each API's requests go to, under the base URL."""


class _Transported:
    """The sending half of lm-eval's ``TemplateAPI``, through a ``Transport``."""

    _transport: Transport
    _route: str
    _stall_s: float | None
    _local: threading.local

    def bind(self, transport: Transport, route: str, stall_s: float | None) -> None:
        """Send through ``transport`` to ``route``; ``stall_s``: the stall watchdog's limit."""
        self._transport, self._route, self._stall_s = transport, route, stall_s
        self._local = threading.local()

    @contextlib.contextmanager
    def counting(self, count: RetryCount) -> Iterator[RetryCount]:
        """Count the retries of the requests this thread sends meanwhile into ``count``."""
        self._local.count = count
        try:
            yield count
        finally:
            self._local.count = None

    def _send(self, payloads: list[dict[str, Any]], tags: list[Any] | None = None) -> list[Any]:
        """Each payload's answer; ``tags``: lm-eval's cache keys of the prompts each carries
        (whose requests its retries are counted for)."""
        count = getattr(self._local, "count", None)
        transport = self._transport
        return transport.post_many(
            self._route,
            payloads,
            count,
            stall_s=self._stall_s,
            on_stall=transport.cancel_all,
            tags=tags,
        )

    def _payload(self, messages: Any, generate: bool, gen_kwargs: dict[str, Any] | None) -> Any:
        lm: Any = self
        return lm._create_payload(
            lm.create_message(messages),
            generate=generate,
            gen_kwargs=copy.deepcopy(gen_kwargs),
            seed=lm._seed,
            eos=lm.eos_string,
        )

    def model_call(
        self,
        messages: Any,
        *,
        generate: bool = True,
        gen_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> Any:
        """lm-eval's one-at-a-time path (``num_concurrent`` 1): one request, its JSON."""
        return self._send([self._payload(messages, generate, gen_kwargs)])[0]

    async def get_batched_requests(
        self,
        requests: list[Any],
        cache_keys: list[Any],
        *,
        generate: bool = True,
        ctxlens: list[int] | None = None,
        **kwargs: Any,
    ) -> list[list[Any]]:
        """lm-eval's concurrent path (always taken: ``num_concurrent`` is given to lm-eval as 2
        at least, the transport's limiter keeps the real bound): every batch of ``batch_size``
        requests sent at once, each parsed as lm-eval parses it, its cache keys (the prompts'
        own arguments) tagging its HTTP request."""
        lm: Any = self
        lm_ctxlens: list[Any] = ctxlens or [None] * len(requests)
        batches = list(chunks(requests, n=lm._batch_size))
        lengths = list(chunks(lm_ctxlens, n=lm._batch_size))
        keys = list(chunks(list(cache_keys or [None] * len(requests)), n=lm._batch_size))
        gen_kwargs = kwargs.get("gen_kwargs")
        payloads = [self._payload(b, generate, gen_kwargs) for b in batches]
        outputs = self._send(payloads, keys)
        parsed = []
        for output, batch, ctx in zip(outputs, batches, lengths, strict=True):
            if generate:
                answers = lm.parse_generations(outputs=output)
                none = LMEVAL_MODEL_NONE_ANSWER_PLACEHOLDER  # lm-eval's answer for null content
                parsed.append([none if a is None else a for a in answers])
            else:
                parsed.append(lm.parse_logprobs(outputs=output, tokens=batch, ctxlens=ctx))
        return parsed


def prompt_logprobs_problem(outputs: Any, tokens: list[list[int]] | None) -> str | None:
    """Why a loglikelihood answer cannot be scored: a choice without a log-probability for
    every prompt token (the prompt's, echoed, plus the one generated), or None."""
    outputs = outputs if isinstance(outputs, list) else [outputs]
    choices = [c for out in outputs for c in sorted(out.get("choices", []), key=_index)]
    if tokens is not None and len(choices) != len(tokens):
        return f"{len(choices)} choice(s) for {len(tokens)} prompt(s)"
    for i, choice in enumerate(choices):
        logprobs = (choice.get("logprobs") or {}).get("token_logprobs")
        if not isinstance(logprobs, list):
            return "no token_logprobs in its answer"
        if tokens is not None and len(logprobs) != len(tokens[i]) + 1:
            return (
                f"log-probabilities for {len(logprobs)} token(s) of a prompt of "
                f"{len(tokens[i])} token(s) plus one generated"
            )
    return None


def _index(choice: dict[str, Any]) -> int:
    return int(choice.get("index", 0))


class EndpointCompletions(_Transported, LocalCompletionsAPI):
    """lm-eval's ``local-completions``, sending through harness's transport."""

    def parse_logprobs(
        self,
        outputs: Any,
        tokens: list[list[int]] | None = None,
        ctxlens: list[int] | None = None,
        **kwargs: Any,
    ) -> list[tuple[float, bool]]:
        problem = prompt_logprobs_problem(outputs, tokens)
        if problem is not None:
            raise EndpointError(
                f"the server cannot score a loglikelihood request: {problem} (it must echo the "
                "prompt's log-probabilities: echo=true, logprobs=1). Nothing was scored. Fix: "
                "an OpenAI-compatible completions server that returns prompt logprobs (vLLM, "
                "SGLang), or generation tasks only"
            )
        return list(super().parse_logprobs(outputs=outputs, tokens=tokens, ctxlens=ctxlens))


class EndpointChat(_Transported, LocalChatCompletion):
    """lm-eval's ``local-chat-completions`` (generation only), sending through harness's
    transport."""


def adds_bos(tokenizer: Any) -> bool:
    """The tokenizer puts a token before the text when asked for its special tokens (Llama's
    ``<s>``): lm-eval's vLLM model then encodes every request with it, so the endpoint must too
    (lm-eval's API models leave it out unless ``add_bos_token``)."""
    probe = "a"
    with_special = tokenizer(probe).input_ids
    plain = tokenizer(probe, add_special_tokens=False).input_ids
    return bool(with_special) and with_special != plain
