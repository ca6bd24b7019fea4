"""The tokenizer check against a server that can answer neither ``/tokenize`` nor an echoed
completion (a real HTTP peer on 127.0.0.1 that has no ``/tokenize`` and answers completions
without log-probabilities): the check is not possible, which is a warning and a record, never a
refusal. Against vLLM's real server (``/tokenize``, and without it the echoed prompt tokens):
tests/engines/test_endpoint.py."""

from __future__ import annotations

import logging

from harness.engines.remote.tokenizer_check import check_tokenizer
from harness.paths import PLUGINS_DIR
from tests.engines.test_endpoint_transport import peer, transport  # noqa: F401  the fixture


def test_a_server_without_tokenize_or_echo_cannot_be_compared(peer, caplog):  # noqa: F811
    from transformers import AutoTokenizer

    source = str(PLUGINS_DIR / "models" / "tiny_char")
    tokenizer = AutoTokenizer.from_pretrained(source)
    link = transport(peer.url)
    try:
        with caplog.at_level(logging.WARNING):
            check = check_tokenizer(link, "tiny", tokenizer, source)
            again = check_tokenizer(link, "tiny", tokenizer, source)
    finally:
        link.close()
    assert check.verdict.startswith("not possible: no usable /tokenize (")
    assert "404" in check.verdict and "returned no prompt tokens" in check.verdict
    assert not check.differs and again is check  # asked once
    assert peer.seen == 1  # the echoed completion, once
    warnings = [r.getMessage() for r in caplog.records if "could not be compared" in r.getMessage()]
    assert len(warnings) == 1
