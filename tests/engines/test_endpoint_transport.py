"""The endpoint engine's transport (``harness/engines/remote/transport.py``) against a small HTTP
peer on 127.0.0.1 that answers as it is told: transport errors are retried with backoff and
counted, a 4xx is not, a request still failing fails for good, a peer that stops answering trips
the stall watchdog, and a 429 halves the requests in flight.

What the peer answers is not a model's answer (the metrics are checked against vLLM's real server
in ``test_endpoint.py``): these are the transport's own rules, each in well under a second.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web

from harness.engines.base import EngineDied
from harness.engines.remote.transport import EndpointError, EndpointGone, RetryCount, Transport


class Peer:
    """An HTTP server whose answers to ``POST /v1/completions`` are a script: each entry a
    status (its JSON ``{"n": i}`` for 200) or ``"hang"``; after the script, 200."""

    def __init__(self, script: list[Any]) -> None:
        self.script = list(script)
        self.seen = 0
        self.in_flight = self.most_in_flight = 0
        self.stopping = False
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.port = asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def _start(self) -> int:
        app = web.Application()
        app.router.add_post("/v1/completions", self._answer)
        self.runner = web.AppRunner(app, handle_signals=False)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        return int(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]

    async def _answer(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.seen += 1
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            step = self.script.pop(0) if self.script else 200
            while step == "hang" and not self.stopping:
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.02)  # long enough for requests to overlap
            if step == 200:
                return web.json_response({"n": body.get("n")})
            return web.json_response({"error": f"scripted {step}"}, status=step)
        finally:
            self.in_flight -= 1

    def stop(self) -> None:
        self.stopping = True
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)


@pytest.fixture
def peer(request) -> Iterator[Peer]:
    server = Peer(getattr(request, "param", []))
    yield server
    server.stop()


def transport(url: str, **given: Any) -> Transport:
    settings = {"timeout": 5.0, "tries": 4, "wait_s": 0.01, "concurrency": 4} | given
    return Transport(url, None, **settings)


@pytest.mark.parametrize("peer", [[429, 500, 503]], indirect=True)
def test_transport_errors_are_retried_and_counted(peer):
    link, count = transport(peer.url), RetryCount()
    try:
        assert link.post_many("completions", [{"n": 1}], count) == [{"n": 1}]
    finally:
        link.close()
    assert count.retried == 3 == link.retried
    assert peer.seen == 4


@pytest.mark.parametrize("peer", [[200, 429, 429, 200, 500, 500, 500]], indirect=True)
def test_each_requests_retries_are_counted_with_its_tag_even_when_it_fails(peer):
    """Three calls into one count: the first answers, the second after two 429s, the third
    fails for good after three 500s (tries 3): each keeps its retries, beside its tag."""
    link, count = transport(peer.url, tries=3), RetryCount()
    try:
        link.post_many("completions", [{"n": 0}], count, tags=["zero"])
        link.post_many("completions", [{"n": 1}], count, tags=["one"])
        with pytest.raises(EndpointError):
            link.post_many("completions", [{"n": 2}], count, tags=["two"])
    finally:
        link.close()
    assert count.tags == ["zero", "one", "two"]
    assert count.each == [0, 2, 2] and count.retried == 4 == link.retried


@pytest.mark.parametrize("peer", [[400]], indirect=True)
def test_a_client_error_is_not_retried(peer):
    link = transport(peer.url)
    try:
        with pytest.raises(EndpointError, match="HTTP 400"):
            link.post_many("completions", [{"n": 1}])
    finally:
        link.close()
    assert peer.seen == 1 and link.retried == 0


@pytest.mark.parametrize("peer", [[503] * 10], indirect=True)
def test_a_request_still_failing_after_its_tries_fails_for_good(peer):
    link = transport(peer.url, tries=3)
    try:
        with pytest.raises(EndpointError, match="failed 3 time"):
            link.post_many("completions", [{"n": 1}])
    finally:
        link.close()
    assert peer.seen == 3 and link.retried == 2


def test_an_unreachable_server_is_gone_an_engine_died():
    link = transport("http://127.0.0.1:9/v1", tries=2)
    try:
        with pytest.raises(EndpointGone, match="did not answer") as err:
            link.post_many("completions", [{"n": 1}])
    finally:
        link.close()
    assert isinstance(err.value, EngineDied)


@pytest.mark.parametrize("peer", [["hang"]], indirect=True)
def test_a_peer_that_answers_nothing_trips_the_stall_watchdog(peer):
    link, stalls = transport(peer.url, timeout=60.0), []
    try:
        with pytest.raises(EngineDied, match="answered nothing for 1s"):
            stall = {"stall_s": 1.0, "on_stall": lambda: stalls.append(1)}
            link.post_many("completions", [{"n": 1}], **stall)
    finally:
        link.close()
    assert stalls == [1]


@pytest.mark.parametrize("peer", [[429, 429]], indirect=True)
def test_a_429_halves_the_requests_in_flight(peer):
    link = transport(peer.url, concurrency=8)
    try:
        got = link.post_many("completions", [{"n": i} for i in range(40)])
    finally:
        link.close()
    assert got == [{"n": i} for i in range(40)]  # in order, whatever was retried
    assert link.limiter.lowest <= 4
    assert peer.most_in_flight <= 8
