"""How many requests an endpoint engine keeps in flight: AIMD, as TCP does it.

A 429 (too many requests) halves the limit at once; each request that succeeds grows it by
``1/limit``, about one more request per round of them, back up to the most allowed. Used in the
transport's event loop only (``harness/engines/remote/transport.py``).
"""

from __future__ import annotations

import asyncio


class Limiter:
    """Requests in flight, at most ``limit``: halved on a 429, grown back by ``1/limit`` a
    success (about one per round of requests), never above ``most`` nor under 1. Used in the
    transport's event loop only."""

    def __init__(self, most: int) -> None:
        self.most = most
        self.limit = float(most)
        self.lowest = most
        """The fewest requests in flight it allowed (after 429s), for the record."""
        self.in_flight = 0
        self._free: asyncio.Condition | None = None

    async def acquire(self) -> None:
        if self._free is None:
            self._free = asyncio.Condition()
        async with self._free:
            await self._free.wait_for(lambda: self.in_flight < int(self.limit))
            self.in_flight += 1

    async def release(self, throttled: bool) -> None:
        assert self._free is not None
        async with self._free:
            self.in_flight -= 1
            if throttled:
                self.limit = max(1.0, self.limit / 2)
                self.lowest = min(self.lowest, int(self.limit))
            else:
                self.limit = min(float(self.most), self.limit + 1 / self.limit)
            self._free.notify_all()
