"""The identity of a recorded sample's question: the one hash that joins runs sample by sample.

Two places read it and must agree byte for byte: the per-sample tables logged to MLflow
(``harness/tracking/samples_table.py``, its ``request_hash`` column) and the paired comparison
of runs (``harness/compare/samples.py``), so it lives here, below both.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any


def arguments_hash(arguments: Any) -> str:
    """A hash of a sample's request arguments: every request lm-eval made for the document
    (context and continuation, or context and generation settings), so the prompt the model saw
    with its few-shot examples and chat template. Canonical JSON (as the request journal keys its
    records, ``harness/record/journal.py``), sha256, 32 hex characters. lm-eval's own
    ``prompt_hash`` covers the first request's context only, so two runs with other choices or
    other generation settings would share it."""
    text = json.dumps(arguments, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode(errors="surrogatepass")).hexdigest()[:32]
