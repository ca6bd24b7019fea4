"""Whose retries they were: each HTTP request's retries given to the lm-eval requests it carried.

lm-eval's API models reorder the requests (longest first) and batch ``batch_size`` prompts into
one HTTP request; each HTTP request is tagged with its prompts' cache keys (lm-eval's own: a
loglikelihood request's ``(context, continuation)``, a generation's ``(context, gen_kwargs)``).
The keys are matched back to the requests of the engine call in order (two requests with the same
arguments take their keys in the order lm-eval sent them, which keeps the original order among
equals), and each request is marked with the retries of the HTTP request that carried it
(``harness.engines.base.note_retries``). A dataset then counts, from the marks on its own
requests, every HTTP request of its that was sent again, in a merged call too and when its call
failed for good.
"""

from __future__ import annotations

import itertools
from collections import defaultdict, deque
from collections.abc import Hashable, Sequence
from typing import Any

from harness.engines.base import note_retries
from harness.engines.remote.transport import RetryCount

_serial = itertools.count(1)
"""Numbers the HTTP requests of this process whose retries are noted."""


def mark_retries(op: str, requests: Sequence[Any], count: RetryCount) -> None:
    """Mark each of ``requests`` (one engine call of type ``op``) with the retries of the HTTP
    requests that carried it, as ``count`` saw them (``count.each``, ``count.tags``)."""
    if not count.retried or not requests:
        return
    waiting = _positions(op, requests)
    for tags, retries in zip(count.tags, count.each, strict=True):
        carried = [_take(waiting, op, tag) for tag in tags or [None]]
        if retries:
            serial = next(_serial)
            for position in sorted(set(carried)):
                note_retries(requests[position], serial, retries)


def _key(op: str, args: Sequence[Any]) -> Hashable:
    """What a request's arguments and its cache key have in common: the context and
    continuation of a loglikelihood request, the context of a generation."""
    first = args[0] if args else None
    if op == "loglikelihood":
        return _hashable(tuple(args[:2]))
    return _hashable(first)


def _hashable(value: Any) -> Hashable:
    try:
        hash(value)
    except TypeError:
        return repr(value)
    return value


def _positions(op: str, requests: Sequence[Any]) -> dict[Hashable, deque[int]]:
    positions: dict[Hashable, deque[int]] = defaultdict(deque)
    for i, request in enumerate(requests):
        positions[_key(op, tuple(request.args))].append(i)
    return positions


def _take(waiting: dict[Hashable, deque[int]], op: str, tag: Any) -> int:
    """The position of the request a cache key stands for (the first still waiting); a
    rolling loglikelihood call has one request and no key; a key that matches none (which
    lm-eval's keys never are) is given to the first request, so that no retry goes uncounted."""
    if tag is None or op == "loglikelihood_rolling":
        return 0
    found = waiting.get(_key(op, tuple(tag)))
    return found.popleft() if found else 0
