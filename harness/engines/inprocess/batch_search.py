"""``strategy.batch_size=auto`` for lm-eval's Hugging Face model: the search run once per request
shape and engine, not once per call.

lm-eval's ``HFLM`` searches the largest batch that fits (``_detect_batch_size``: five forward
passes at the longest length, halving on out-of-memory) at every ``loglikelihood`` and
``generate_until`` call. Harness calls it once per journal slice, so a run searched 8-12 times,
each time printing two lines, and on a CPU (which never runs out of memory: every search ends at
``max_batch_size``) ``batch_size=auto`` took twice as long as the default batch size
(issue #35). Here the search runs once per shape of request, at a token count rounded up to a
power of two (at most the model's context): log-likelihood at its longest request (lm-eval's
own length), generation at its longest prompt plus ``max_gen_toks`` (lm-eval searches at the
whole context, five passes of ``max_batch_size`` x ``max_length``: several times a small
dataset's own time on a CPU), rolling log-likelihood at the whole context (its windows'). A
size found for a length serves every request no longer, for every slice and dataset; the call
itself then runs at that fixed size, as lm-eval would have run it after its own search
(``batch_size_per_gpu``, read by its ``batch_size``). ``auto:N`` (lm-eval searches N times
within one call, as the requests get shorter) is searched the same way: each slice at the size
for its longest request.

On the CPU the search is harness's own copy of lm-eval's with two costs taken out (issue #35:
two searches were 18% of a two-dataset run): one forward pass per size tried, not five, and no
garbage collection around it. Both are there for a GPU's caching allocator (fragmentation across
passes, cached blocks freed by ``gc`` and ``empty_cache``); the CPU's allocator gives the same
answer on the first pass and has no cache to clear. The out-of-memory guard is kept as lm-eval
has it: accelerate's ``should_reduce_batch_size`` (which knows the CPU allocator's "can't
allocate memory") and its 0.9 step down from ``max_batch_size``; 1 when nothing fits. On a GPU
the search is lm-eval's own ``_detect_batch_size``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

log = logging.getLogger(__name__)

LENGTH_MARGIN = 2
"""Tokens added to a log-likelihood request's count: lm-eval's own encoding may add a prefix
token (an empty context) or split the text at another place than one pass over it."""


def is_auto(batch_size: Any) -> bool:
    """Whether ``strategy.batch_size`` asks lm-eval to search (``auto`` or ``auto:N``)."""
    return str(batch_size).startswith("auto")


def length_bucket(tokens: int, max_length: int) -> int:
    """The length a search is run at: ``tokens`` rounded up to a power of two, at most the
    model's context (a size found for a length fits every shorter request)."""
    bucket = 1
    while bucket < tokens:
        bucket *= 2
    return min(bucket, max_length)


class BatchSizeSearch:
    """The batch sizes found for one loaded ``HFLM``, by the length they were searched at.

    Args:
        lm: lm-eval's ``HFLM``, built with ``batch_size="auto"``.
    """

    def __init__(self, lm: Any) -> None:
        self.lm = lm
        self.found: dict[int, int] = {}
        """Batch size by the token length it was searched at."""
        self.used: dict[str, dict[int, int]] = {}
        """What each request type was run at: {type: {length searched at: batch size}}."""
        self.searches = 0
        """Searches run (lm-eval's ``_detect_batch_size`` calls, or ``cpu_search``'s)."""
        self.searched: list[int] = []
        """The token length of each search, in order."""

    def size_for(self, op: str, requests: Sequence[Any]) -> int:
        """The batch size for ``requests`` of type ``op``: one already found for a length at
        least theirs, else one searched now."""
        max_length = int(self.lm.max_length)
        if op == "loglikelihood_rolling":  # windows of the whole context
            length = max_length
        elif op == "generate_until":  # the longest prompt and all it may generate
            length = length_bucket(self._longest_generation(requests), max_length)
        else:
            length = length_bucket(self._longest(requests), max_length)
        known = [n for n in self.found if n >= length]
        if known:
            length = min(known)
        else:
            self.found[length] = self._search(length, max_length)
        self.used.setdefault(op, {})[length] = self.found[length]
        return self.found[length]

    def record(self) -> dict[str, dict[str, int]]:
        """What ``auto`` became, for summary.json: {request type: {"<=N tokens": size}}."""
        return {
            op: {f"<={length} tokens": size for length, size in sorted(by_length.items())}
            for op, by_length in self.used.items()
        }

    def _longest(self, requests: Sequence[Any]) -> int:
        """The token count of the longest log-likelihood request (context and continuation)."""
        texts = [str(r.args[0]) + str(r.args[1]) for r in requests if len(r.args) >= 2]
        if not texts:
            return 1
        ids = self.lm.tokenizer(texts, add_special_tokens=False)["input_ids"]
        return max(len(i) for i in ids) + LENGTH_MARGIN

    def _longest_generation(self, requests: Sequence[Any]) -> int:
        """The most tokens a generation request can hold: its prompt and its ``max_gen_toks``
        (lm-eval's default where the request sets none). A forward pass over that many tokens
        takes at least the memory of generating them with a KV cache."""
        default = int(getattr(self.lm, "max_gen_toks", 256))
        prompts = [str(r.args[0]) for r in requests]
        if not prompts:
            return 1
        ids = self.lm.tokenizer(prompts, add_special_tokens=False)["input_ids"]
        most = 0
        for request, prompt in zip(requests, ids, strict=True):
            settings = request.args[1] if len(request.args) > 1 else {}
            wanted = (
                settings.get("max_gen_toks", default) if isinstance(settings, dict) else default
            )
            most = max(most, len(prompt) + int(wanted))
        return most + LENGTH_MARGIN

    def _search(self, length: int, max_length: int) -> int:
        """lm-eval's own search, at ``length`` tokens: its ``_detect_batch_size`` reads the
        length from a request's encoded context (one token more, which it drops); on the CPU
        the same search with one pass and no garbage collection (``cpu_search``)."""
        began = time.perf_counter()
        on_cpu = str(getattr(self.lm, "device", "")).startswith("cpu")
        if on_cpu and getattr(self.lm, "backend", "causal") == "causal":
            size = cpu_search(self.lm, length)
        elif length >= max_length:
            size = int(self.lm._detect_batch_size())
        else:
            size = int(self.lm._detect_batch_size([(None, [0] * (length + 1), [])], 0))
        self.searches += 1
        self.searched.append(length)
        log.info(
            "batch_size=auto: %d for requests of up to %d tokens (searched in %.1fs; kept for "
            "every slice and dataset)",
            size,
            length,
            time.perf_counter() - began,
        )
        return size


def cpu_search(lm: Any, length: int) -> int:
    """lm-eval's ``_detect_batch_size`` for a causal model on the CPU at ``length`` tokens: from
    ``max_batch_size`` down by accelerate's 0.9 step while a forward pass (and lm-eval's
    log-softmax over it) runs out of memory; one pass per size, no ``gc.collect``."""
    import torch
    import torch.nn.functional as F
    from accelerate.utils.memory import should_reduce_batch_size

    size = int(lm.max_batch_size)
    while size > 0:
        try:
            batch = torch.ones((size, length), device=lm.device).long()
            with torch.no_grad():
                F.log_softmax(lm._model_call(batch), dim=-1, dtype=lm.softmax_dtype)
            return size
        except RuntimeError as error:
            if not should_reduce_batch_size(error):
                raise
            size = int(size * 0.9)
    return 1  # lm-eval's answer when no size fits
