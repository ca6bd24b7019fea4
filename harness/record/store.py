"""Completed dataset results across runs, keyed by fingerprint: what makes a run resumable.

The store's files are read here and nowhere else: ``<outputs_root>/store/<model>/`` holds one
record per dataset and fingerprint (``<dataset>-<fingerprint>.json``) and, under ``journal/``,
the request journals of datasets a run stopped inside (harness/record/journal.py).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from pathlib import Path
from typing import Any

from harness.record.files import json_default, write_json_atomic
from harness.record.journal import JournalFile, RequestJournal
from harness.secrets import mask

log = logging.getLogger(__name__)

STORE_FORMAT = "harness-store/1"
_RECORD = re.compile(r"^(?P<dataset>.+)-(?P<fingerprint>[0-9a-f]{20})\.json$")


class ResultStore:
    """Completed dataset results across runs, keyed by fingerprint; what makes a run resumable.

    A record is written atomically and only after its dataset finished, and carries a checksum
    of its payload: a torn, truncated or edited file fails the check and is evaluated again.
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    @classmethod
    def of_model(cls, outputs_root: Path, model: str) -> ResultStore:
        """The store of one model name (``model.name``) under ``outputs_root``."""
        return cls(outputs_root / "store" / model)

    def path(self, dataset: str, fingerprint: str) -> Path:
        """Where the record of ``dataset`` under ``fingerprint`` is kept."""
        return self.root / f"{dataset}-{fingerprint}.json"

    def journal(self, dataset: str, fingerprint: str) -> RequestJournal:
        """The request journal of ``dataset`` under its journal ``fingerprint``, beside the
        results (a rerun writes a new run directory, but finds the same store)."""
        return RequestJournal(self.root / "journal", dataset, fingerprint)

    def journals(self, dataset: str) -> list[JournalFile]:
        """Every request journal of ``dataset`` in this store, of any fingerprint."""
        folder = self.root / "journal"
        if not folder.is_dir():
            return []
        now = time.time()
        found = (JournalFile.found(p, now) for p in folder.glob("*.jsonl"))
        return [j for j in found if j is not None and j.dataset == dataset]

    def stored_keys_of(self, dataset: str) -> list[dict[str, Any]]:
        """The key of each intact record of ``dataset`` (any fingerprint)."""
        if not self.root.is_dir():
            return []
        keys = []
        for path in self.root.glob("*.json"):
            match = _RECORD.match(path.name)
            if match is None or match["dataset"] != dataset:
                continue
            payload = self.load(dataset, match["fingerprint"])
            if payload is not None and isinstance(payload.get("key"), dict):
                keys.append(payload["key"])
        return keys

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

    def stored_keys(self) -> list[dict[str, Any]]:
        """The key of every record that can be read, newest first (unchecked: the key says
        what wrote it, the checksum only whether its result may be reused, ``load``)."""
        if not self.root.is_dir():
            return []
        records = [p for p in self.root.glob("*.json") if not p.name.startswith(".")]
        found = []
        for path in sorted(records, key=lambda p: p.stat().st_mtime, reverse=True):
            try:
                key = json.loads(path.read_text(encoding="utf-8"))["payload"]["key"]
            except (OSError, ValueError, KeyError, TypeError) as err:
                log.debug("%s: no key to read (%s)", path, err)
                continue
            if isinstance(key, dict):
                found.append(key)
        return found
