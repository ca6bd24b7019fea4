"""Completed dataset results across runs, keyed by fingerprint: what makes a run resumable."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from harness.record.files import json_default, write_json_atomic
from harness.secrets import mask

log = logging.getLogger(__name__)

STORE_FORMAT = "harness-store/1"


class ResultStore:
    """Completed dataset results across runs, keyed by fingerprint; what makes a run resumable.

    A record is written atomically and only after its dataset finished, and carries a checksum
    of its payload: a torn, truncated or edited file fails the check and is evaluated again.
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, dataset: str, fingerprint: str) -> Path:
        return self.root / f"{dataset}-{fingerprint}.json"

    def save(
        self,
        dataset: str,
        fingerprint: str,
        key: dict[str, Any],
        outcome: dict[str, Any],
        result: dict[str, Any],
    ) -> Path:
        payload = {"key": key, "outcome": outcome, "result": result}
        text = json.dumps(payload, sort_keys=True, default=json_default, ensure_ascii=False)
        text = mask(text)  # what is hashed is what is written (the write masks too)
        record = {
            "format": STORE_FORMAT,
            "fingerprint": fingerprint,
            "sha256": hashlib.sha256(text.encode()).hexdigest(),
            "payload": json.loads(text),
        }
        path = self.path(dataset, fingerprint)
        write_json_atomic(path, record)
        return path

    def load(self, dataset: str, fingerprint: str) -> dict[str, Any] | None:
        """The stored payload (key, outcome, result), or None when absent or not intact."""
        path = self.path(dataset, fingerprint)
        if not path.is_file():
            return None
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            text = json.dumps(record["payload"], sort_keys=True, ensure_ascii=False)
            intact = (
                record.get("format") == STORE_FORMAT
                and record.get("fingerprint") == fingerprint
                and hashlib.sha256(text.encode()).hexdigest() == record.get("sha256")
            )
        except (OSError, ValueError, KeyError, TypeError) as err:
            log.warning("stored result %s is unreadable (%s); evaluating again", path, err)
            return None
        if not intact:
            log.warning("stored result %s fails its checksum; evaluating again", path)
            return None
        payload: dict[str, Any] = record["payload"]
        return payload
