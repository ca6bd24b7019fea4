"""A model already served over HTTP, as an engine: ``EndpointEngine``.

Nothing loads here but the model's tokenizer (the model group's: it counts tokens and, for the
completions API, turns every request into the token ids the in-process engines read). Requests
go out through lm-eval's own API models (``harness.engines.remote.lm``) over harness's transport
(``harness.engines.remote.transport``): retried on transport errors only, never scored when they
fail. It is a ``RemoteEngine``: ``check`` sends one request for one token (a server that is up but
stuck fails it), ``revive`` restarts a service harness started (``EndpointTarget.restart``) and
never a foreign server, ``kill`` cancels what is in flight, and an ``answer`` that hears nothing
from the server for ``plan.stall_timeout_s`` raises ``EngineDied`` (the stall watchdog).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from harness.engines.base import (
    HEALTH_TIMEOUT_S,
    Answered,
    EngineDied,
    answer_with,
    lengths_with,
    recordable,
)
from harness.engines.remote.probe import tokenizer_source
from harness.engines.remote.target import EndpointTarget

if TYPE_CHECKING:
    from harness.planning.plan import Plan

log = logging.getLogger(__name__)


def target_of(plan: Plan) -> EndpointTarget:
    """The endpoint a ``strategy=endpoint`` plan names, its API key read from the environment
    variable ``strategy.api_key_env`` (the server's only model when no ``model_id`` is given:
    the probe before the run found it)."""
    from harness.engines.remote.probe import served_model_id

    strategy = plan.strategy_used
    assert strategy.base_url, "strategy.base_url is checked before planning"
    key = os.environ.get(strategy.api_key_env) or None
    model_id = strategy.model_id or served_model_id(strategy.base_url, key)
    return EndpointTarget(strategy.base_url, strategy.api.value, model_id, api_key=key)


@contextlib.contextmanager
def _quiet(logger: str) -> Iterator[None]:
    """``logger``'s warnings left out meanwhile (lm-eval's API models warn of what harness
    chose on purpose: prompts batched per request)."""
    log_of = logging.getLogger(logger)
    level = log_of.level
    log_of.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log_of.setLevel(level)


class EndpointEngine:
    """An OpenAI-compatible server as the run's engine (see the module).

    Args:
        plan: the run's plan (the model's tokenizer and context; the transport's settings from
            ``strategy``; ``stall_timeout_s``).
        target: where the server is and which model of it to ask.
    """

    def __init__(self, plan: Plan, target: EndpointTarget) -> None:
        from harness.engines.remote.probe import server_facts
        from harness.engines.remote.tokenizer_check import check_tokenizer
        from harness.engines.remote.transport import Transport

        self.plan, self.target = plan, target
        strategy = plan.strategy_used
        self.stall_timeout_s = plan.stall_timeout_s or None
        self.transport = Transport(
            target.base_url,
            target.api_key,
            timeout=strategy.timeout,
            tries=strategy.max_retries,
            wait_s=strategy.retry_wait_s,
            concurrency=strategy.num_concurrent,
        )
        self.restarts = 0
        self.closed = False
        try:
            self.lm: Any = self._build_lm()
            self.server = server_facts(self.transport, target.model_id)
            self.tokenizer_check = check_tokenizer(
                self.transport, target.model_id, self.tokenizer, tokenizer_source(plan)
            ).verdict  # the preflight's, for a run on strategy=endpoint: asked once
            self.check()  # the first request warms a fresh server up: part of the load
        except BaseException:
            self.transport.close()
            raise

    def _build_lm(self) -> Any:
        from harness.engines.remote.lm import ROUTES, EndpointChat, EndpointCompletions, adds_bos
        from harness.engines.remote.probe import load_tokenizer

        plan, strategy, target = self.plan, self.plan.strategy_used, self.target
        model = plan.model_used
        chat = target.api == "chat"
        self.tokenizer = load_tokenizer(plan)
        kwargs: dict[str, Any] = {
            "model": target.model_id,
            "base_url": self.transport.url(ROUTES[target.api]),
            # lm-eval would load the tokenizer through AutoTokenizer (a string only): built
            # without one, the model group's is set below, as lm-eval's huggingface backend
            "tokenizer_backend": "none",
            "tokenizer": None,
            "tokenized_requests": False,
            "trust_remote_code": model.trust_remote_code,
            "revision": model.revision,
            # lm-eval's concurrent path always (its cache keys tag each HTTP request with the
            # prompts it carries); the transport's limiter keeps strategy.num_concurrent
            "num_concurrent": max(2, strategy.num_concurrent),
            "max_retries": 1,  # lm-eval's own loop tries once: the transport retries
            "batch_size": strategy.batch_size,
            "max_length": plan.max_model_len,
            "timeout": int(strategy.timeout),
        }
        if plan.seed is not None:
            kwargs["seed"] = plan.seed
        if chat and plan.engine_args.get("think_end_token"):
            kwargs["think_end_token"] = plan.engine_args["think_end_token"]
        with _quiet("lm_eval.models.api_models"):  # "Batch size > 1 detected": it is meant
            lm: Any = (EndpointChat if chat else EndpointCompletions)(**kwargs)
        if not chat:  # what lm-eval's huggingface backend sets up, with the tokenizer loaded
            from lm_eval.models.utils import configure_pad_token

            lm.tokenizer_backend = "huggingface"
            lm.tokenizer = configure_pad_token(self.tokenizer)
            lm.tokenized_requests = strategy.tokenized_requests
            lm.add_bos_token = adds_bos(lm.tokenizer)  # as lm-eval's vLLM model encodes
        lm.bind(self.transport, ROUTES[target.api], self.stall_timeout_s)
        return lm

    # -- the Engine protocol ------------------------------------------------------------------

    def answer(self, op: str, requests: Sequence[Any]) -> Answered:
        """lm-eval's answers to ``requests`` from the server, with the tokens each read and
        produced; each request is marked with the retries of the HTTP requests that carried it
        (``note_retries``), also when the call fails. A rolling loglikelihood request is asked
        alone (lm-eval sends each text's windows on their own anyway), so its windows' retries
        are its own."""
        if self.closed:
            raise EngineDied(f"the endpoint engine for {self.transport.shown} is closed")
        if op != "loglikelihood_rolling":
            return self._answer(op, requests)
        parts = [self._answer(op, [request]) for request in requests]
        return Answered(
            [a for p in parts for a in p.answers],
            [n for p in parts for n in p.prompt_tokens],
            [n for p in parts for n in p.generated_tokens],
        )

    def _answer(self, op: str, requests: Sequence[Any]) -> Answered:
        from harness.engines.remote.retries import mark_retries
        from harness.engines.remote.transport import RetryCount

        count = RetryCount()
        try:
            with self.lm.counting(count):
                return answer_with(self.lm, op, requests, self.token_lengths)
        finally:
            mark_retries(op, requests, count)

    def token_lengths(self, texts: Sequence[Any]) -> list[int]:
        """Each text's tokens under the model's tokenizer (a chat request's conversation as the
        JSON lm-eval keeps it in)."""
        return lengths_with(self.tokenizer, [getattr(t, "prompt", t) for t in texts])

    def describe(self) -> dict[str, Any]:
        strategy, lm = self.plan.strategy_used, self.lm
        facts: dict[str, Any] = {
            "kind": "endpoint",
            "base_url": self.transport.shown,
            "api": self.target.api,
            "model_id": self.target.model_id,
            "server": self.server,
            "service_id": self.target.service_id,
            "tokenizer": tokenizer_source(self.plan),
            "tokenizer_check": self.tokenizer_check,
            "tokenized_requests": bool(getattr(lm, "tokenized_requests", False)),
            "add_bos_token": bool(getattr(lm, "add_bos_token", False)),
            "max_length": self.plan.max_model_len,
            "batch_size": strategy.batch_size,
            "num_concurrent": strategy.num_concurrent,
            "concurrency_lowest": self.transport.limiter.lowest,
            "max_retries": strategy.max_retries,
            "timeout_s": strategy.timeout,
            "requests_retried": self.transport.retried,
            "restarts": self.restarts,
            "telemetry": self._telemetry(),
        }
        return {k: v if isinstance(v, dict) else recordable(v) for k, v in facts.items()}

    def _telemetry(self) -> str:
        """What the run's GPU telemetry watched of the server (``harness.telemetry.session``:
        the server's GPUs on this node, nothing of a server elsewhere). A run that attached to
        a service watched this node's GPUs as the engine its plan names would have been."""
        from harness.engines.remote.place import place_of

        place = place_of(self.target.base_url)
        if self.plan.engine == "endpoint" or not place.on_this_node:
            return place.telemetry()
        return (
            f"per phase on this node: every GPU of it, as for a {self.plan.engine} engine of "
            f"this plan; of the service attached to: {place.telemetry()}"
        )

    def close(self) -> None:
        """Close the connections; the server is not ours to stop (a service outlives the run)."""
        if not self.closed:
            self.closed = True
            self.transport.close()

    # -- the RemoteEngine protocol ------------------------------------------------------------

    def call(self, op: str, payload: Any = None, timeout: float | None = None) -> Any:
        """``ping`` (the health check), ``get`` (a route's JSON) or ``post`` ((route,
        payload): its JSON), each within ``timeout`` (its tries included)."""
        wait = timeout or HEALTH_TIMEOUT_S
        if op == "ping":
            from harness.engines.remote.probe import ping

            return ping(self.transport, self.target, wait)
        if op == "get":
            return self.transport.request("GET", str(payload), within=wait)
        if op == "post":
            route, body = payload
            return self.transport.request("POST", route, body, within=wait)
        raise ValueError(f"unknown endpoint operation {op!r}: ping, get or post")

    def check(self, timeout: float = HEALTH_TIMEOUT_S) -> None:
        """One request for one generated token (a 429 or 5xx tried again, all within
        ``timeout``): raises ``EngineDied`` when the server cannot be reached or answers nothing
        in time, ``EndpointError`` when it answers with an error."""
        if self.closed:
            raise EngineDied(f"the endpoint engine for {self.transport.shown} is closed")
        if self.stall_timeout_s:  # a server that answers nothing is stalled within the limit
            timeout = min(timeout, self.stall_timeout_s)
        self.call("ping", timeout=timeout)

    def revive(self, rebuild: bool = True) -> bool:
        """Check the server; a service harness started (``target.restart``) that fails it is
        restarted once and checked again (True). A foreign server is never restarted: what
        ``check`` raised is raised, and the dataset fails with it (its journal kept)."""
        try:
            self.check()
            return False
        except Exception as err:
            if not rebuild or self.target.restart is None:
                raise
            where = self.transport.shown
            log.warning("the service at %s is unhealthy (%s): restarting it", where, err)
        self.restarts += 1
        self.target.restart()
        self.check()
        return True

    def kill(self) -> None:
        """Cancel every request in flight (a stalled server; the server itself is not ours)."""
        self.transport.cancel_all()
