"""How data-parallel replicas share the work: each ``answer``'s requests dealt out balanced by
size (one context's requests on one replica), and a node's CPUs in equal shares, one a replica."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

DEFAULT_GEN_TOKS = 256
"""lm-eval's default ``max_gen_toks``: the size a generation request adds to its prompt."""


def request_size(args: Sequence[Any]) -> int:
    """A request's cost, roughly: characters of its strings, plus the tokens a generation may
    produce (``max_gen_toks``)."""
    size = 0
    for arg in args:
        if isinstance(arg, str):
            size += len(arg)
        elif isinstance(arg, dict):
            size += int(arg.get("max_gen_toks", DEFAULT_GEN_TOKS))
    return max(size, 1)


def shard(requests: Sequence[Sequence[Any]], replicas: int) -> list[list[int]]:
    """Indices of ``requests`` for each replica, balanced by size.

    Requests sharing their first argument (the context: the choices of one multiple-choice
    question) form one group and go to one replica. Groups are dealt largest first, each to the
    replica with the least work so far (ties: the lowest index); every shard keeps its requests in
    their original order. Deterministic: the same requests always shard the same way.
    """
    groups: dict[Any, list[int]] = {}
    for i, args in enumerate(requests):
        key = args[0] if args and isinstance(args[0], str) else i
        groups.setdefault(key, []).append(i)
    sized = [(sum(request_size(requests[i]) for i in idx), idx) for idx in groups.values()]
    sized.sort(key=lambda s: (-s[0], s[1][0]))
    loads = [0] * replicas
    shards: list[list[int]] = [[] for _ in range(replicas)]
    for size, idx in sized:
        target = min(range(replicas), key=lambda r: (loads[r], r))
        loads[target] += size
        shards[target] += idx
    return [sorted(s) for s in shards]


def cpu_shares(cpus: Sequence[int], replicas: int) -> list[list[int]]:
    """Contiguous, equal shares of ``cpus`` for ``replicas`` replicas on one node (any CPUs left
    over go unused, so that every replica computes with the same number of threads)."""
    each = len(cpus) // replicas
    if each < 1:
        raise ValueError(
            f"{replicas} replicas need a CPU each but this process may use {len(cpus)} "
            f"({list(cpus)}). Fix: strategy.data_parallel_size <= {len(cpus)}."
        )
    ordered = sorted(cpus)
    return [ordered[i * each : (i + 1) * each] for i in range(replicas)]
