"""A dataset's request journal: every answer that came back whole, so a killed run resumes inside
the dataset instead of asking the engine everything again.

One file per dataset and journal fingerprint, ``<store>/journal/<dataset>-<fingerprint>.jsonl``,
beside the result store (a rerun writes a new run directory, but finds the same store). Plain JSON
lines, never pickle; every line carries a checksum of its own content:

- a *session* line opens each run's writing: ``{"session": {facts}, "fingerprint": ..., "s": ...}``
  (who wrote what follows: run uid, host, data-parallel size);
- a *record* line is one answered request: ``{"k": request key, "a": answer, "s": ...}``.

Reading trusts nothing it cannot check: a torn or corrupt line is skipped (its request is asked
again), and the records after a session line of another fingerprint are never read. Writes
append whole lines, one ``write`` per batch of answers, flushed to the OS at once (a SIGKILL of
the process loses only what was in flight) and ``fsync``-ed at most every ``SYNC_EVERY_S``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

log = logging.getLogger(__name__)

JOURNAL_FORMAT = "harness-journal/1"
KEEP_DAYS = 14.0
"""A journal of another setting than a stored result's, untouched this long, is removed when
its dataset's result is next stored: the run that wrote it was not resumed in that time."""
_NAME = re.compile(r"^(?P<dataset>.+)-(?P<fingerprint>[0-9a-f]{20})\.jsonl$")
SYNC_EVERY_S = 5.0
"""Longest time between two ``fsync`` calls while answers are written (a node that loses power
loses at most this much; a killed process loses only the batch in flight)."""


def _canonical(body: dict[str, Any]) -> str:
    return json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def _checksum(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _line(body: dict[str, Any]) -> str:
    """The body's canonical JSON with its checksum as a last key (one ``dumps`` a line: the
    reader drops ``s`` and checks the canonical text of the rest)."""
    text = _canonical(body)
    return f'{text[:-1]},"s":"{_checksum(text)}"}}' if len(text) > 2 else text


@dataclass
class JournalContents:
    """What a journal holds for one fingerprint, as read back."""

    answers: dict[str, Any] = field(default_factory=dict)
    """Answers by request key."""
    sources: list[dict[str, Any]] = field(default_factory=list)
    """Each writing session whose records were read: its facts and ``records``, the count."""
    skipped: int = 0
    """Lines skipped: torn, corrupt, or written under another fingerprint."""


class RequestJournal:
    """The journal of one dataset under one fingerprint."""

    def __init__(self, root: Path, dataset: str, fingerprint: str) -> None:
        self.path = root / f"{dataset}-{fingerprint}.jsonl"
        self.fingerprint = fingerprint
        self._file: IO[str] | None = None
        self._synced = 0.0

    def read(self) -> JournalContents:
        """Every intact record written under this fingerprint (none when there is no file)."""
        found = JournalContents()
        if not self.path.is_file():
            return found
        current: dict[str, Any] | None = None  # the session the records belong to; None: unread
        with self.path.open("rb") as handle:
            for raw in handle:
                body = _intact(raw)
                if body is None:
                    found.skipped += 1
                    continue
                if "session" in body:
                    current = None
                    if body.get("fingerprint") == self.fingerprint:
                        current = {**body["session"], "records": 0}
                        found.sources.append(current)
                    continue
                if current is None or "k" not in body:
                    found.skipped += 1
                    continue
                found.answers[body["k"]] = body.get("a")
                current["records"] += 1
        if found.skipped:
            log.warning(
                "request journal %s: %d line(s) torn, corrupt or of another fingerprint were "
                "skipped; their requests are asked again",
                self.path,
                found.skipped,
            )
        return found

    def open(self, session: dict[str, Any]) -> None:
        """Start appending, under a session line of these facts. A torn last line (a killed
        writer) is ended first, so that what is appended starts a line of its own."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            ends_torn = False
            if self.path.is_file() and self.path.stat().st_size:
                with self.path.open("rb") as handle:
                    handle.seek(-1, os.SEEK_END)
                    ends_torn = handle.read(1) != b"\n"
            self._file = self.path.open("a", encoding="utf-8")
            head = "\n" if ends_torn else ""
            line = _line({"session": session, "fingerprint": self.fingerprint})
            self._file.write(head + line + "\n")
            self._file.flush()
        except OSError as err:
            self._give_up(err)
        self._synced = time.monotonic()

    def append(self, records: Iterable[tuple[str, Any]]) -> None:
        """Write ``(key, answer)`` records: one write, flushed; ``fsync`` every few seconds."""
        if self._file is None:
            return
        text = "".join(_record_line(key, answer) + "\n" for key, answer in records)
        if not text:
            return
        try:
            self._file.write(text)
            self._file.flush()
            if time.monotonic() - self._synced >= SYNC_EVERY_S:
                os.fsync(self._file.fileno())
                self._synced = time.monotonic()
        except OSError as err:
            self._give_up(err)

    def _give_up(self, err: OSError) -> None:
        """The journal cannot be written (a full disk, a read-only store): the evaluation goes
        on without it, as it would without tracking; a line half written is a torn line, which
        a reader skips."""
        log.warning(
            "request journal %s cannot be written (%s); this dataset goes on without it (a run "
            "killed now evaluates it from the start)",
            self.path,
            err,
        )
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
        self._file = None

    def close(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.flush()
                os.fsync(self._file.fileno())
            with contextlib.suppress(OSError):  # what it still buffers cannot be written
                self._file.close()
            self._file = None

    def delete(self) -> None:
        """Remove the journal: its dataset's result is stored, nothing in it is needed again."""
        self.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        with contextlib.suppress(OSError):  # the store keeps no empty journal folder
            self.path.parent.rmdir()


@dataclass(frozen=True)
class JournalFile:
    """A journal on disk, as its name and file say (its records unread)."""

    path: Path
    dataset: str
    fingerprint: str
    """Its journal fingerprint (harness/evaluation/fingerprint.py ``journal_key``)."""
    size: int
    """Bytes."""
    age_s: float
    """Seconds since it was last written."""

    @classmethod
    def found(cls, path: Path, now: float) -> JournalFile | None:
        """The journal at ``path``; None when the name is no journal's or the file is gone."""
        match = _NAME.match(path.name)
        if match is None:
            return None
        try:
            stat = path.stat()
        except OSError:
            return None
        return cls(path, match["dataset"], match["fingerprint"], stat.st_size, now - stat.st_mtime)

    def remove(self) -> bool:
        """Delete it; False when it could not be (gone already counts as removed)."""
        try:
            self.path.unlink()
        except FileNotFoundError:
            return True
        except OSError as err:
            log.warning("request journal %s could not be removed (%s)", self.path, err)
            return False
        return True


def _record_line(key: str, answer: Any) -> str:
    """``_line({"k": key, "a": answer})``, written by hand for loglikelihood's ``(float, bool)``
    answer (most of a journal; the generic way costs several times more per request)."""
    if (
        isinstance(answer, tuple)
        and len(answer) == 2
        and type(answer[0]) is float
        and math.isfinite(answer[0])
        and type(answer[1]) is bool
        and key.isascii()
        and '"' not in key
        and "\\" not in key
    ):
        text = f'{{"a":[{answer[0]!r},{"true" if answer[1] else "false"}],"k":"{key}"}}'
        return f'{text[:-1]},"s":"{_checksum(text)}"}}'
    return _line({"k": key, "a": answer})


def _intact(raw: bytes) -> dict[str, Any] | None:
    """A line's body when it is whole JSON whose checksum matches, else None."""
    try:
        record = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(record, dict):
        return None
    checksum = record.pop("s", None)
    return record if record and checksum == _checksum(_canonical(record)) else None
