"""HTTP to an OpenAI-compatible server, where transport errors are never answers.

One ``aiohttp`` session lives on an event loop of its own (a daemon thread), so requests from any
thread share its connections. Every request is tried again, with exponential backoff, on what is
the transport's fault and not the model's: a timeout, a connection error, HTTP 408, 429 and 5xx
(a 429's ``Retry-After`` is obeyed); it gives up after ``tries`` and raises, so nothing that failed
is ever parsed, journaled or scored. A 429 also halves the requests allowed in flight, and each
success grows them back by about one per round (``Limiter``). Every retry is counted, into the
``RetryCount`` of the call that sent it and the transport's total.

Giving up on a server that cannot be reached (connection refused, every try timed out) raises
``EndpointGone``, an ``EngineDied``: the loop checks the endpoint, restarts a service harness
started, and fails the dataset with the reason otherwise. Giving up on a server that answers with
an error raises ``EndpointError``: that dataset fails, the others go on.

Importing this module imports ``aiohttp`` (lm-eval's ``api`` extra).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from harness.engines.base import EngineDied, stalled
from harness.engines.remote.limiter import Limiter
from harness.secrets import mask

RETRY_STATUS = frozenset({408, 429})
"""Statuses tried again besides every 5xx: a request timeout, too many requests."""
WAIT_CAP_FACTOR = 30.0
"""The longest wait before a retry, in units of the first (``retry_wait_s``)."""


class EndpointError(RuntimeError):
    """The server answered a request with an error, for good (after its tries, or at once for
    a 4xx that no retry changes): that dataset fails with it."""


class EndpointGone(EngineDied):
    """The server could not be reached, or answered nothing, on any try."""


@dataclass
class RetryCount:
    """The retries of one engine call (one dataset's slice, or several merged), in all and for
    each HTTP request ``post_many`` sent: the engine gives each request's retries to the
    prompts it carried (``tags``), so each dataset counts its own."""

    retried: int = 0
    """HTTP requests sent again after a transport error."""
    each: list[int] = field(default_factory=list)
    """The retries of each HTTP request ``post_many`` sent, in the order given (one that was
    cancelled, or failed for good, keeps those it took)."""
    tags: list[Any] = field(default_factory=list)
    """What each of those requests carried, as the caller tagged it (``post_many``'s ``tags``)."""


class Transport:
    """JSON over HTTP to one server, with bounded retries and adaptive concurrency.

    Args:
        base_url: the API root (``http://host:port/v1``); routes are relative to it.
        api_key: sent as a bearer token; None sends none.
        timeout: seconds one HTTP request may take.
        tries: tries of one request, the first included.
        wait_s: the first wait before a retry (doubled each time, capped at 30 times it).
        concurrency: requests in flight at most.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        timeout: float,
        tries: int,
        wait_s: float,
        concurrency: int,
    ) -> None:
        self.shown = mask(base_url.rstrip("/"))
        self.base_url = _without_userinfo(base_url) if api_key else base_url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.timeout, self.tries, self.wait_s = timeout, max(1, tries), wait_s
        self.limiter = Limiter(max(1, concurrency))
        self.retried = 0
        """Retries over the transport's life."""
        self.last_answer = time.monotonic()
        """When the server last answered a request (any status): the stall watchdog's clock."""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="endpoint-io", daemon=True
        )
        self._thread.start()
        self._session: aiohttp.ClientSession | None = None
        self._pending: set[Future[Any]] = set()
        self.closed = False

    def url(self, route: str) -> str:
        """An absolute route (``/tokenize``) is the server root's; a relative one the API's."""
        if route.startswith("/"):
            root = self.base_url[:-3] if self.base_url.endswith("/v1") else self.base_url
            return root + route
        return f"{self.base_url}/{route}"

    def post_many(
        self,
        route: str,
        payloads: Sequence[dict[str, Any]],
        count: RetryCount | None = None,
        stall_s: float | None = None,
        on_stall: Callable[[], None] | None = None,
        tags: Sequence[Any] | None = None,
    ) -> list[Any]:
        """The answers to many POSTs sent at once (up to the limiter's limit), in order. The
        first that fails for good cancels the rest and is raised. With ``stall_s``, no answer
        from the server for that long cancels them all, calls ``on_stall`` and raises
        ``EngineDied`` (the stall watchdog). Each POST's retries go to ``count.each``, its tag
        (``tags``, one a payload) to ``count.tags``."""
        count = count if count is not None else RetryCount()
        first = len(count.each)
        count.each.extend([0] * len(payloads))
        count.tags.extend(tags if tags is not None else [None] * len(payloads))
        coro = self._gather(route, list(payloads), count, first)
        return self._wait(asyncio.run_coroutine_threadsafe(coro, self._loop), stall_s, on_stall)

    def request(
        self, method: str, route: str, payload: dict[str, Any] | None = None, within: float = 0
    ) -> Any:
        """One request's JSON answer, retried as the module says, all tries within ``within``
        seconds (0: the transport's own bound): the probes and the health check."""
        coro = self._with_retries(method, route, payload, RetryCount())
        if within > 0:
            coro = self._within(coro, within, route)
        return self._wait(asyncio.run_coroutine_threadsafe(coro, self._loop), None, None)

    def cancel_all(self) -> None:
        """Cancel every request in flight (a stalled server: ``kill``)."""
        for future in list(self._pending):
            future.cancel()

    def close(self) -> None:
        """Cancel what is in flight, close the session and stop the loop's thread."""
        if self.closed:
            return
        self.closed = True
        self.cancel_all()
        if self._session is not None:
            done = asyncio.run_coroutine_threadsafe(self._session.close(), self._loop)
            with contextlib.suppress(Exception):  # closing what may be broken
                done.result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def _wait(
        self, future: Future[Any], stall_s: float | None, on_stall: Callable[[], None] | None
    ) -> Any:
        if self.closed:
            future.cancel()
            raise EndpointGone(f"the endpoint engine for {self.shown} is closed")
        self._pending.add(future)
        started = time.monotonic()
        try:
            while True:
                try:
                    return future.result(timeout=0.5)
                except TimeoutError:
                    pass
                quiet = time.monotonic() - max(self.last_answer, started)
                if stall_s and quiet > stall_s:
                    future.cancel()
                    if on_stall is not None:
                        on_stall()
                    raise stalled(stall_s) from None
        finally:
            self._pending.discard(future)

    async def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=0)  # the limiter decides what is in flight
            self._session = aiohttp.ClientSession(connector=connector, headers=self.headers)
        return self._session

    async def _gather(
        self, route: str, payloads: list[dict[str, Any]], count: RetryCount, first: int
    ) -> list[Any]:
        tasks = [
            asyncio.ensure_future(self._with_retries("POST", route, p, count, first + i))
            for i, p in enumerate(payloads)
        ]
        try:
            return list(await asyncio.gather(*tasks))
        except BaseException:
            for task in tasks:
                task.cancel()
            raise

    async def _within(self, coro: Any, seconds: float, route: str) -> Any:
        try:
            return await asyncio.wait_for(coro, seconds)
        except TimeoutError:
            url = mask(self.url(route))
            raise EndpointGone(f"{url}: no answer within {seconds:g}s") from None

    async def _with_retries(
        self,
        method: str,
        route: str,
        payload: dict[str, Any] | None,
        count: RetryCount,
        slot: int | None = None,
    ) -> Any:
        """One request, tried up to ``tries`` times; every retry counted (in ``count.each[slot]``
        too, given a slot)."""
        reason = ""
        for attempt in range(1, self.tries + 1):
            await self.limiter.acquire()
            throttled = False
            try:
                status, body, retry_after = await self._send(method, route, payload)
                if status < 300:
                    return _json(body, self.url(route))
                throttled = status == 429
                if status < 500 and status not in RETRY_STATUS:
                    raise EndpointError(_refused(status, self.url(route), body))
                reason = f"HTTP {status}: {_excerpt(body)}"
            except (aiohttp.ClientError, TimeoutError) as err:
                reason, retry_after = _transport_reason(err, self.timeout), None
            finally:
                await self.limiter.release(throttled)
            if attempt == self.tries:
                break
            count.retried += 1
            if slot is not None:
                count.each[slot] += 1
            self.retried += 1
            await asyncio.sleep(self._backoff(attempt, retry_after))
        raise self._given_up(route, reason)

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        cap = self.wait_s * WAIT_CAP_FACTOR
        wait = min(cap, self.wait_s * 2 ** (attempt - 1)) * random.uniform(0.75, 1.0)
        return min(cap, max(wait, retry_after or 0.0))

    def _given_up(self, route: str, reason: str) -> Exception:
        what = f"{mask(self.url(route))} failed {self.tries} time(s), the last with {reason}"
        if reason.startswith("HTTP"):
            return EndpointError(
                f"{what}. Fix: look at the server's log; a server under load: lower "
                "strategy.num_concurrent or raise strategy.max_retries"
            )
        return EndpointGone(f"the endpoint did not answer: {what}")

    async def _send(
        self, method: str, route: str, payload: dict[str, Any] | None
    ) -> tuple[int, bytes, float | None]:
        session = await self._open()
        limit = aiohttp.ClientTimeout(total=self.timeout)
        async with session.request(method, self.url(route), json=payload, timeout=limit) as resp:
            body = await resp.read()
            self.last_answer = time.monotonic()
            return resp.status, body, _retry_after(resp.headers.get("Retry-After"))


def _without_userinfo(url: str) -> str:
    """``url`` without ``user:pass@``: a bearer key and basic credentials cannot go together
    (aiohttp refuses), and the key is what the server was given."""
    parts = urlsplit(url.rstrip("/"))
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=host))


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None  # an HTTP date: the backoff decides


def _transport_reason(err: BaseException, timeout: float) -> str:
    if isinstance(err, TimeoutError):
        return f"no answer within {timeout:g}s (strategy.timeout)"
    return f"{type(err).__name__}: {mask(str(err))}"


def _excerpt(body: bytes, limit: int = 300) -> str:
    text = body.decode(errors="replace").strip().replace("\n", " ")
    return mask(text[:limit] + ("..." if len(text) > limit else ""))


def _refused(status: int, url: str, body: bytes) -> str:
    return f"{mask(url)} answered HTTP {status}: {_excerpt(body)}"


def _json(body: bytes, url: str) -> Any:
    try:
        return json.loads(body)
    except ValueError as err:
        text = f"{mask(url)} answered with no JSON ({err}): {_excerpt(body)}"
        raise EndpointError(text) from None
