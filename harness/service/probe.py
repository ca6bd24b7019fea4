"""Asking a served model whether it is there: its model list and a one-token completion.

Plain ``urllib`` (no client library to import); the API key goes in the ``Authorization`` header
only, and no error raised here carries it (the messages name the URL and the HTTP status).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from harness.secrets import mask

HEALTH_PROMPT = "a"
"""What the health check completes (one token): any text the tokenizer has."""


class NotAnswering(RuntimeError):
    """The server did not answer, or answered with an error; the message says which."""


def request_json(
    url: str, api_key: str | None, timeout: float, body: dict[str, Any] | None = None
) -> Any:
    """GET ``url`` (POST ``body`` as JSON when given) and return the JSON answer.

    Raises:
        NotAnswering: refused, timed out, an HTTP error status, or an answer that is not JSON.
    """
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    data = None if body is None else json.dumps(body).encode("utf-8")
    request = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            return json.loads(reply.read().decode("utf-8"))
    except urllib.error.HTTPError as err:
        raise NotAnswering(f"{mask(url)} answered HTTP {err.code} ({err.reason})") from None
    except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as err:
        why = getattr(err, "reason", err)
        raise NotAnswering(f"{mask(url)} did not answer ({why})") from None
    except ValueError:
        raise NotAnswering(f"{mask(url)} answered something that is not JSON") from None


def served_models(base_url: str, api_key: str | None, timeout: float = 5.0) -> list[dict[str, Any]]:
    """The server's ``/v1/models`` list (vLLM's entries carry ``max_model_len`` and ``root``)."""
    answer = request_json(f"{base_url.rstrip('/')}/models", api_key, timeout)
    data = answer.get("data") if isinstance(answer, dict) else None
    if not isinstance(data, list):
        raise NotAnswering(f"{mask(base_url)}/models answered without a model list")
    return [m for m in data if isinstance(m, dict)]


def complete_one_token(base_url: str, api_key: str | None, model_id: str, timeout: float) -> str:
    """The health check: a one-token completion of ``HEALTH_PROMPT``; the text generated.

    A server whose HTTP front answers while its engine is stuck fails this (a ``/health`` that
    says ok would pass).
    """
    body = {"model": model_id, "prompt": HEALTH_PROMPT, "max_tokens": 1, "temperature": 0}
    answer = request_json(f"{base_url.rstrip('/')}/completions", api_key, timeout, body)
    choices = answer.get("choices") if isinstance(answer, dict) else None
    if not choices or not isinstance(choices[0], dict) or "text" not in choices[0]:
        raise NotAnswering(f"{mask(base_url)}/completions answered without a completion")
    return str(choices[0]["text"])
