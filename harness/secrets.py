"""Secrets never leave the machine: tokens, keys and passwords masked in everything harness writes.

``mask`` replaces, in any text:

- the value of every environment variable whose name says it holds a secret (``HF_TOKEN``,
  ``MLFLOW_TRACKING_PASSWORD``, ``AWS_SECRET_ACCESS_KEY``, ``WANDB_API_KEY``, ...), wherever it
  appears (a config that interpolated ``${oc.env:HF_TOKEN}`` included);
- credentials inside URIs: ``https://user:pass@host`` becomes ``https://***@host``;
- secret-named query parameters: ``?token=...``, ``&api_key=...``, ``&sig=...``;
- tokens of well-known shapes: Hugging Face ``hf_...``, GitHub ``ghp_...``, OpenAI ``sk-...``,
  AWS access key ids, Slack ``xox?-...``.

Everything that writes uses it: the run directory's files (``results.write_text_atomic``), MLflow
params and tags (``tracking``), the console and log lines (``say`` and ``MaskFilter`` on every
handler), events.jsonl, and Hydra's own ``.hydra/*.yaml``.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any

MASK = "***"
_SECRET_NAME = re.compile(
    r"TOKEN|SECRET|PASSWORD|PASSWD|PASSPHRASE|API_?KEY|ACCESS_?KEY|PRIVATE_?KEY|CREDENTIAL|"
    r"AUTH|SIGNATURE",
    re.IGNORECASE,
)
_NOT_SECRET_NAME = re.compile(
    r"TOKENIZERS|AUTHORITY|_(SOCK|PATH|FILE|DIR|HOME|PARALLELISM|TYPE|HOST|PORT|URL|URI|ENABLED)$|^HF_HUB_DISABLE",
    re.IGNORECASE,
)
_MIN_ENV_SECRET = 6
"""Shorter values (``1``, ``true``) would mask ordinary text; they are no secret anyway."""
_PLAIN = re.compile(r"(?i)^(true|false|yes|no|none|null|\d+)$")

_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*\\?://)[^/\s@'\"<>]+@")
r"""``scheme://user:pass@``; also as Hydra escapes it in a sweep's records (``http\://u\:p@``)."""
# MLflow UI's viewStateShareKey names a saved table view, no secret (harness/tracking.py).
_QUERY = re.compile(
    r"(?P<key>[?&;](?!viewStateShareKey=)[\w.-]*(?:token|key|secret|password|passwd|pwd|sig|"
    r"signature|auth|credential)[\w.-]*\\?=)[^&;#\s'\"<>]+",
    re.IGNORECASE,
)
_SHAPES = re.compile(
    r"\b(?:hf_[A-Za-z0-9]{30,}|gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{30,}|"
    r"sk-[A-Za-z0-9_-]{20,}|AKIA[0-9A-Z]{16}|xox[abprs]-[A-Za-z0-9-]{10,})"
)


def env_secrets(environ: dict[str, str] | None = None) -> list[str]:
    """Values of the environment's secret-named variables, longest first."""
    env = os.environ if environ is None else environ
    values = {
        value
        for name, value in env.items()
        if _SECRET_NAME.search(name)
        and not _NOT_SECRET_NAME.search(name)
        and len(value) >= _MIN_ENV_SECRET
        and not _PLAIN.match(value)
    }
    return sorted(values, key=len, reverse=True)


def mask(text: str, secrets: list[str] | None = None) -> str:
    """``text`` with every secret it holds replaced by ``***``.

    Args:
        secrets: the environment's secrets (``env_secrets()``), where the caller masks many
            strings at once; read from the environment now when None.
    """
    if not text:
        return text
    for value in env_secrets() if secrets is None else secrets:
        if value in text:
            text = text.replace(value, MASK)
    if "//" in text:
        text = _USERINFO.sub(rf"\g<scheme>{MASK}@", text)
    if "=" in text:
        text = _QUERY.sub(rf"\g<key>{MASK}", text)
    return _SHAPES.sub(MASK, text)


def secret_parts(text: str) -> list[str] | None:
    """The pieces of ``text`` that ``mask`` hides, in order: ``mask(text)`` with each ``***``
    put back as its piece is ``text``. Empty when ``text`` holds no secret; None where ``text``
    holds ``***`` already (its pieces cannot be told from the rest).
    """
    masked = mask(text)
    if masked == text:
        return []
    if MASK in text:
        return None
    pattern = "(.+?)".join(re.escape(kept) for kept in masked.split(MASK))
    found = re.fullmatch(pattern, text, re.DOTALL)
    return None if found is None else list(found.groups())


def mask_tree(obj: Any, secrets: list[str] | None = None) -> Any:
    """A copy of nested dicts, lists and strings with every string masked (keys included).

    The environment is read once per tree, not once per string (a config holds hundreds)."""
    if secrets is None:
        secrets = env_secrets()
    if isinstance(obj, str):
        return mask(obj, secrets)
    if isinstance(obj, dict):
        return {mask_tree(k, secrets): mask_tree(v, secrets) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [mask_tree(v, secrets) for v in obj]
    return obj


class MaskFilter(logging.Filter):
    """A handler filter that masks each record's message (and traceback) before it is written."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            record.exc_text = mask(logging.Formatter().formatException(record.exc_info))
        return True


def mask_handlers(logger: logging.Logger | None = None) -> None:
    """Put a ``MaskFilter`` on every handler of ``logger`` (the root by default), once."""
    for handler in (logger or logging.getLogger()).handlers:
        if not any(isinstance(f, MaskFilter) for f in handler.filters):
            handler.addFilter(MaskFilter())
