"""Whether the server's tokenizer is the model group's: the same probe text tokenized there and
here must agree token for token.

The server's tokens come from vLLM's ``/tokenize`` where it has one; a server without it is asked
for its prompt tokens another way, through the completions API every such server has: the probe
text sent with ``echo=true, logprobs=1, max_tokens=1`` comes back with a log-probability entry per
prompt token (as token ids where the server honours vLLM's ``return_tokens_as_token_ids``, else as
each token's text, compared with the local tokenizer's text of each id). Only a server that
answers neither cannot be compared: the run goes on with a warning, and the record says
``tokenizer_check: not possible`` (the engine's facts in summary.json and MLflow).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

from harness.engines.remote.transport import EndpointError, EndpointGone, Transport

log = logging.getLogger(__name__)

PROBE_TEXT = "The probe: 12 + 30 = 42; reverse 'abc' -> 'cba'.\nA B C"
"""Text tokenized by the server and here; the two must agree token for token."""
TIMEOUT_S = 15.0
"""Longest ``/tokenize`` may take."""
ECHO_TIMEOUT_S = 300.0
"""Longest the echoed request may take: a fresh server's first request warms it up."""
TOKEN_ID = re.compile(r"^token_id:(\d+)$")
"""vLLM's form of a token given as its id (``return_tokens_as_token_ids``)."""

_verdicts: dict[tuple[str, str, str], TokenizerCheck] = {}
"""Each server, model and tokenizer checked in this process: the preflight's check is the
engine's record."""


@dataclass(frozen=True)
class TokenizerCheck:
    """What comparing the two tokenizers found."""

    verdict: str
    """For the record: ``equal (/tokenize)``, ``equal (echoed prompt tokens)``, ``differs
    (...)`` or ``not possible: ...``."""
    served: int | None = None
    """The probe's tokens on the server (None: not known)."""
    local: int | None = None
    """The probe's tokens here."""
    first_difference: int | None = None
    """The first token where the two differ (None: equal, or only the lengths differ)."""

    @property
    def differs(self) -> bool:
        return self.verdict.startswith("differs")


def check_tokenizer(
    transport: Transport, model_id: str, tokenizer: Any, source: str
) -> TokenizerCheck:
    """Compare the server's tokens of ``PROBE_TEXT`` with ``tokenizer``'s (from ``source``),
    once per server, model and tokenizer in this process."""
    key = (transport.base_url, model_id, source)
    if key not in _verdicts:
        _verdicts[key] = _check(transport, model_id, tokenizer)
        if _verdicts[key].verdict.startswith("not possible"):
            log.warning(
                "the server's tokenizer could not be compared with %s (%s); prompts and token "
                "counts are assumed to be what the server reads",
                source,
                _verdicts[key].verdict,
            )
    return _verdicts[key]


def _check(transport: Transport, model_id: str, tokenizer: Any) -> TokenizerCheck:
    local = list(tokenizer(PROBE_TEXT, add_special_tokens=False).input_ids)
    body = {"model": model_id, "prompt": PROBE_TEXT, "add_special_tokens": False}
    try:
        answer = transport.request("POST", "/tokenize", body, TIMEOUT_S)
        served = answer.get("tokens") if isinstance(answer, dict) else None
        if isinstance(served, list):
            return _compared(served, local, "/tokenize")
        no_tokenize = "its /tokenize answers no token list"
    except (EndpointError, EndpointGone) as err:
        no_tokenize = f"no usable /tokenize ({err})"
    echoed, why_not = _echoed(transport, model_id, tokenizer)
    if echoed is None:
        return TokenizerCheck(f"not possible: {no_tokenize}; {why_not}", local=len(local))
    ids, pieces = echoed
    if ids is not None:
        return _compared(_without_leading_special(ids, tokenizer), local, "echoed prompt tokens")
    here = [tokenizer.decode([i]) for i in local]
    special = _special_texts(tokenizer)
    pieces = pieces[1:] if pieces and pieces[0] in special and pieces[0] not in here[:1] else pieces
    return _compared(pieces, here, "echoed prompt tokens, as text")


def _compared(served: list[Any], local: list[Any], how: str) -> TokenizerCheck:
    if served == local:
        return TokenizerCheck(f"equal ({how})", len(served), len(local))
    pairs = enumerate(zip(served, local, strict=False))
    at = next((i for i, (a, b) in pairs if a != b), None)
    where = f"first difference at token {at}" if at is not None else "lengths differ"
    return TokenizerCheck(f"differs ({how}: {where})", len(served), len(local), at)


def _echoed(
    transport: Transport, model_id: str, tokenizer: Any
) -> tuple[tuple[list[int] | None, list[str]] | None, str]:
    """The server's prompt tokens of ``PROBE_TEXT`` from an echoed completion: (ids or None,
    texts), or None and why not."""
    body = {
        "model": model_id,
        "prompt": PROBE_TEXT,
        "max_tokens": 1,
        "temperature": 0,
        "logprobs": 1,
        "echo": True,
        "return_tokens_as_token_ids": True,  # vLLM's (as add_special_tokens); others ignore it
        "add_special_tokens": False,
    }
    try:
        answer = transport.request("POST", "completions", body, ECHO_TIMEOUT_S)
        choice = answer["choices"][0]
        tokens = choice["logprobs"]["tokens"]
        assert isinstance(tokens, list) and len(tokens) > 1
    except (EndpointError, EndpointGone) as err:
        return None, f"an echoed completion failed ({err})"
    except (AssertionError, KeyError, IndexError, TypeError):
        return None, "an echoed completion returned no prompt tokens (echo with logprobs)"
    usage = answer.get("usage") or {}
    prompt = usage.get("prompt_tokens") if isinstance(usage, dict) else None
    count = prompt if isinstance(prompt, int) and 0 < prompt < len(tokens) else len(tokens) - 1
    texts = [str(t) for t in tokens[:count]]
    matched = [TOKEN_ID.match(t) for t in texts]
    if all(matched):
        return ([int(m.group(1)) for m in matched if m], texts), ""
    return (None, texts), ""


def _without_leading_special(ids: list[int], tokenizer: Any) -> list[int]:
    """The server's prompt ids without the special token it put first (a BOS: the probe is sent
    as text, which the server encodes with its special tokens)."""
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    return ids[1:] if ids and ids[0] in special else ids


def _special_texts(tokenizer: Any) -> set[str]:
    return set(getattr(tokenizer, "all_special_tokens", []) or [])
