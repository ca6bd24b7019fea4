"""Where an endpoint engine sends its requests: the contract between the run (``strategy=endpoint``)
and a service harness started itself (``harness.service``), which hands one to ``EndpointEngine``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from harness.secrets import mask

APIS = ("completions", "chat")
"""The OpenAI APIs an endpoint engine speaks: ``completions`` (``/v1/completions``: all three
request types, with prompt log-probabilities) or ``chat`` (``/v1/chat/completions``: generation
only)."""


@dataclass(frozen=True, repr=False)
class EndpointTarget:
    """An OpenAI-compatible server and the model it serves, as an endpoint engine reaches it."""

    base_url: str
    """The server's API root, ending in ``/v1`` (``http://127.0.0.1:8000/v1``)."""
    api: str
    """``completions`` or ``chat`` (``APIS``)."""
    model_id: str
    """The id the server serves the model under (one of its ``/v1/models`` ids)."""
    api_key: str | None = None
    """Sent as ``Authorization: Bearer ...``; never written anywhere (``repr`` leaves it out)."""
    restart: Callable[[], None] | None = field(default=None, compare=False)
    """A service harness started: restarts it (once, on ``revive``); None for a foreign server,
    which the engine never restarts (its dataset fails with the reason instead)."""
    service_id: str | None = None
    """The registry entry this run attached to (``harness.service``), for the record."""

    def __repr__(self) -> str:
        return (
            f"EndpointTarget(base_url={self.masked_url!r}, api={self.api!r}, "
            f"model_id={self.model_id!r}, service_id={self.service_id!r})"
        )

    @property
    def masked_url(self) -> str:
        """``base_url`` with any credentials (``user:pass@``, ``?key=``) masked, for the record."""
        return mask(self.base_url)

    @property
    def root_url(self) -> str:
        """The server's root (``base_url`` without its trailing ``/v1``): where vLLM's own
        ``/version``, ``/tokenize`` and ``/health`` live."""
        url = self.base_url.rstrip("/")
        return url[: -len("/v1")] if url.endswith("/v1") else url
