"""Request journals no result can use, removed once their dataset's result is stored.

A journal is what a crashed run of its setting resumes from (docs/reliability.md), so only what
is certainly of no use goes:

- *complete*: its journal fingerprint is that of a result stored for the dataset: every answer in
  it is in that result, and the run of its setting reuses the result without reading the journal
  (the journal of the result just stored is removed with it, ``dataset.py``; this catches the rest:
  one re-created by a run of the same setting that crashed after the result was stored, or left
  by an older harness);
- *expired*: a journal of another setting (another batch size, engine, library version) that no
  run wrote for ``journal_keep_days`` (a setting; ``KEEP_DAYS`` by default): the run it belongs
  to was not resumed in that time.

A fresh journal of another setting is kept: the crashed run of that setting resumes from it.
Nothing of the run in flight is touched: only the dataset just stored is swept, and its own
journal is the complete one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass

from harness.console import say
from harness.evaluation.fingerprint import fingerprint, journal_key
from harness.record.journal import KEEP_DAYS, JournalFile
from harness.record.store import ResultStore

log = logging.getLogger(__name__)

DAY_S = 86400.0


@dataclass(frozen=True)
class Removed:
    """A journal removed, and why."""

    file: str
    """Its file name in the store's ``journal/`` folder."""
    reason: str
    """``complete`` (its result is stored) or ``expired`` (another setting's, untouched)."""
    bytes: int


def sweep_journals(
    store: ResultStore, dataset: str, keep_days: float = KEEP_DAYS
) -> tuple[list[Removed], list[JournalFile]]:
    """Remove ``dataset``'s journals that no result can use; returns what was removed and the
    journals of other settings kept (each resumable by the run of its setting)."""
    complete = {fingerprint(journal_key(key)) for key in store.stored_keys_of(dataset)}
    removed: list[Removed] = []
    kept: list[JournalFile] = []
    for journal in store.journals(dataset):
        if journal.fingerprint in complete:
            reason = "complete"
        elif journal.age_s > keep_days * DAY_S:
            reason = "expired"
        else:
            kept.append(journal)
            continue
        if journal.remove():
            removed.append(Removed(journal.path.name, reason, journal.size))
    for journal in kept:
        log.info(
            "request journal %s kept: another setting of %s, written %.1f day(s) ago; its run "
            "resumes from it (removed after %g days untouched)",
            journal.path.name,
            dataset,
            journal.age_s / DAY_S,
            keep_days,
        )
    return removed, kept


def removal_line(dataset: str, removed: list[Removed], keep_days: float = KEEP_DAYS) -> str:
    """What the console says of the journals removed."""
    reasons = {r.reason for r in removed}
    why = {
        "complete": "their answers are in a stored result",
        "expired": f"other settings' journals no run wrote for {keep_days:g} days "
        "(journal_keep_days)",
    }
    megabytes = sum(r.bytes for r in removed) / 1e6
    return (
        f"{dataset}: removed {len(removed)} request journal(s) no result can use "
        f"({'; '.join(why[r] for r in sorted(reasons))}), {megabytes:.1f} MB"
    )


def sweep_stored(
    store: ResultStore, dataset: str, emit: Callable[..., None], keep_days: float = KEEP_DAYS
) -> list[Removed]:
    """``sweep_journals`` once ``dataset``'s result is stored, said on the console and as a
    ``journals_removed`` event; a store that cannot be listed keeps its journals (a warning)."""
    try:
        removed, _ = sweep_journals(store, dataset, keep_days)
    except OSError as err:
        log.warning("request journals of %s not swept (%s)", dataset, err)
        return []
    if removed:
        say(removal_line(dataset, removed, keep_days))
        emit("journals_removed", dataset=dataset, journals=[asdict(r) for r in removed])
    return removed
