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


LOAD = """
import sys
from types import SimpleNamespace
from harness.engines.remote.probe import load_tokenizer
model = SimpleNamespace(
    pretrained="plugins/models/tiny_char", revision=None, trust_remote_code=False
)
tokenizer = load_tokenizer(SimpleNamespace(model_used=model))
text = "The probe: 12 + 30 = 42"
print(tokenizer(text).input_ids, type(tokenizer).__name__)
print("transformers.models.auto.tokenization_auto" in sys.modules)
"""


def test_the_endpoint_loads_the_tokenizer_by_its_class_not_through_auto_tokenizer():
    """An endpoint runs no model: its tokenizer (a fast class named in the folder's config) is
    loaded without importing AutoTokenizer's model registry, and encodes as AutoTokenizer's."""
    import subprocess
    import sys

    from transformers import AutoTokenizer

    from harness.paths import PROJECT_ROOT

    done = subprocess.run(
        [sys.executable, "-c", LOAD], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True
    )
    ids, auto_imported = done.stdout.strip().splitlines()[-2:]
    reference = AutoTokenizer.from_pretrained(str(PLUGINS_DIR / "models" / "tiny_char"))
    assert ids == f"{reference('The probe: 12 + 30 = 42').input_ids} {type(reference).__name__}"
    assert auto_imported == "False"
