"""Room on disk for what a run writes, checked before the model loads.

A run writes its run directory (config, plan, events, each dataset's result, samples with
``log_samples=true``, telemetry, summary), a copy of each result in the result store, and, with a
local MLflow store, the database and the artifacts it copies. A disk that cannot hold that is
said before anything is loaded; one that fills up anyway mid-run is ``files.DiskFull``.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path

KIB = 1024
BASE_BYTES = 2 * 1024 * KIB
"""A run's own files and a fresh MLflow SQLite store (about 1 MB empty)."""
RESULT_BYTES = 64 * KIB
"""One dataset's lm-eval result JSON (the bundled ones are 7-10 kB; real tasks with many
subtasks and configs reach tens of kB)."""
SAMPLE_BYTES = 2 * KIB
"""One logged sample (prompt, arguments, responses, filtered answer; before gzip)."""


def needed_bytes(docs: Mapping[str, int], log_samples: bool, tracked_here: bool) -> int:
    """What the run will write: every result twice (run directory, store), samples twice where
    logged, once more for a local MLflow store's artifacts."""
    copies = 3 if tracked_here else 2
    per_dataset = [RESULT_BYTES + (n * SAMPLE_BYTES if log_samples else 0) for n in docs.values()]
    return BASE_BYTES + copies * sum(per_dataset)


def space_problems(folders: Iterable[Path], needed: int) -> list[str]:
    """Each folder (its nearest existing ancestor) whose file system has less room than
    ``needed``, with the figures and the fix."""
    problems = []
    seen: set[int] = set()
    for folder in folders:
        here = next((p for p in (folder, *folder.parents) if p.exists()), None)
        if here is None:
            continue
        try:
            device = here.stat().st_dev
            free = shutil.disk_usage(here).free
        except OSError:
            continue
        if device in seen:
            continue
        seen.add(device)
        if free < needed:
            problems.append(
                f"{folder} has {free / KIB:.0f} kB free on its device, and this run writes "
                f"about {needed / KIB:.0f} kB there (results, the result store, samples, MLflow). "
                "Fix: free space there, or outputs_root=<a folder with room>."
            )
    return problems


def out_of_room(err: BaseException) -> bool:
    """Whether ``err`` says the disk is full: ``OSError`` ENOSPC, or SQLite's "database or disk
    is full" (SQLAlchemy and MLflow wrap it, keeping its text)."""
    import errno

    if isinstance(err, OSError) and err.errno == errno.ENOSPC:
        return True
    text = str(err).lower()
    return "disk is full" in text or "no space left on device" in text


def tracking_fix(uri: str, err: BaseException) -> str:
    """The fix for a failed MLflow call at ``uri``: a local store (SQLite, a folder) has no server
    to start, and a full disk is mended by room, not by another store kind."""
    local = uri.startswith(("sqlite:", "file:", "/")) or "://" not in uri
    path = uri.split(":///", 1)[-1] if local else ""
    if out_of_room(err):
        where = f"the device of {path}" if local else "the tracking server's disk"
        return (
            f"Fix: free space on {where}, or tracking.uri=<a store on a disk with room>, or "
            "tracking=none"
        )
    if local:
        return (
            f"Fix: the store is local ({path}): check that it is a writable MLflow store, or "
            "tracking.uri=<another folder>, or tracking=none"
        )
    return (
        "Fix: start the server (mlflow server --port ...) or pick tracking=local or tracking=none"
    )
