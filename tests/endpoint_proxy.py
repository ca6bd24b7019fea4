"""A small HTTP proxy in front of a real server, for the endpoint tests: it forwards every request
as it came and misbehaves on purpose, as servers under load and networks do.

- ``throttle_every=N``: every N-th dataset request (a POST to ``/v1/completions`` whose prompt
  is a list: token ids or a batch; the probes and health checks send one string) is answered
  ``429 Too Many Requests`` (``Retry-After: 0``) without reaching the server;
- ``throttle_kind="generate"`` (or ``"scored"``): every dataset request of that kind (a
  generation, or an echoed request for prompt log-probabilities) is answered 429, so its dataset
  fails for good after its tries;
- ``no_tokenize=True``: ``/tokenize`` answers 404 (a server without vLLM's route);
- ``delay_every=N``, ``delay_s``: every N-th such request waits that long before it is
  forwarded;
- ``max_model_len=N``: its ``/v1/models`` says the server's context is N tokens (a server
  started with a shorter ``--max-model-len``);
- ``down()`` / ``up()``: the port stops listening (connection refused) and listens again;
- ``hang()``: requests are taken but never answered, until ``up()``.

It counts what it saw (``posts``, ``throttled`` and ``throttled_kinds``, ``delayed``,
``paths``), and runs on an event loop of its own thread, so a test drives it from outside while a
harness run goes through it.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter
from typing import Any

from aiohttp import ClientSession, ClientTimeout, web

COMPLETIONS = "/v1/completions"


class Proxy:
    def __init__(
        self,
        upstream: str,
        throttle_every: int = 0,
        delay_every: int = 0,
        delay_s: float = 0.0,
        max_model_len: int | None = None,
        throttle_kind: str | None = None,
        no_tokenize: bool = False,
    ) -> None:
        self.upstream = upstream.rstrip("/")
        self.throttle_kind, self.no_tokenize = throttle_kind, no_tokenize
        self.throttled_kinds: Counter[str] = Counter()
        self.max_model_len = max_model_len
        self.throttle_every, self.delay_every, self.delay_s = throttle_every, delay_every, delay_s
        self.posts = self.throttled = self.delayed = 0
        self.paths: Counter[str] = Counter()
        self.hanging = False
        self.refusing = False
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._site: web.TCPSite | None = None
        self._runner: web.AppRunner | None = None
        self._session: ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> Proxy:
        self._thread.start()
        self._run(self._start())
        return self

    def stop(self) -> None:
        self._run(self._stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def down(self) -> None:
        """Stop listening (new connections are refused) and drop the ones open."""
        self.refusing = True
        self._run(self._close_site())

    def hang(self) -> None:
        """Take requests, answer none."""
        self.hanging = True

    def up(self) -> None:
        """Listen (on the same port) and answer again."""
        self.hanging = self.refusing = False
        if self._site is None:
            self._run(self._open_site())

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(30)

    async def _start(self) -> None:
        self._session = ClientSession(timeout=ClientTimeout(total=600))
        app = web.Application(client_max_size=64 * 1024**2)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        await self._open_site()

    async def _open_site(self) -> None:
        assert self._runner is not None
        self._site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await self._site.start()
        if not self.port:
            server = self._site._server  # the port the OS chose
            self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def _close_site(self) -> None:
        if self._site is not None:
            await self._site.stop()
            self._site = None

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.paths[f"{request.method} {request.path}"] += 1
        if self.refusing:  # a keep-alive connection of a server that went down
            assert request.transport is not None
            request.transport.close()
            raise web.HTTPServiceUnavailable()
        while self.hanging:
            await asyncio.sleep(0.1)
        body = await request.read()
        if self.no_tokenize and request.path == "/tokenize":
            return web.json_response({"error": "not found (test proxy)"}, status=404)
        if request.method == "POST" and request.path == COMPLETIONS and _listed_prompt(body):
            self.posts += 1
            kind = _kind(body)
            every = self.throttle_every and self.posts % self.throttle_every == 0
            if every or kind == self.throttle_kind:
                self.throttled += 1
                self.throttled_kinds[kind] += 1
                return web.json_response(
                    {"error": "too many requests (test proxy)"},
                    status=429,
                    headers={"Retry-After": "0"},
                )
            if self.delay_every and self.posts % self.delay_every == 0:
                self.delayed += 1
                await asyncio.sleep(self.delay_s)
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host",)}
        async with self._session.request(
            request.method, self.upstream + request.path_qs, data=body, headers=headers
        ) as upstream:
            payload = await upstream.read()
            if self.max_model_len and request.path == "/v1/models":
                listed = json.loads(payload)
                for entry in listed.get("data", []):
                    entry["max_model_len"] = self.max_model_len
                payload = json.dumps(listed).encode()
            kept = {"Content-Type": upstream.headers.get("Content-Type", "application/json")}
            return web.Response(body=payload, status=upstream.status, headers=kept)


def _kind(body: bytes) -> str:
    """``scored`` for a request echoing the prompt's log-probabilities, else ``generate``."""
    return "scored" if json.loads(body).get("echo") else "generate"


def _listed_prompt(body: bytes) -> bool:
    try:
        return isinstance(json.loads(body).get("prompt"), list)
    except (ValueError, AttributeError):
        return False
