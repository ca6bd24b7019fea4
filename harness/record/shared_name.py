"""Two checkpoints under one name: said when a run starts, before its results join the other's.

A run's name (``model.name``, from its checkpoint with ``model=hf``) names its MLflow runs, its
run directory and its folder of stored results (``<outputs_root>/store/<name>/``). The stored
results already say which checkpoint wrote them (each record's key holds ``model.pretrained``,
harness/evaluation/fingerprint.py), so the store folder is the lookup: no file of its own, and a
store written by an earlier commit answers too. Results are never mixed up (their fingerprints
differ with the weights); the names are, in MLflow and in the report, hence the warning.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from harness.console import say
from harness.paths import resolve_project_path
from harness.planning.checkpoint import is_local
from harness.planning.plan import Plan
from harness.record.store import ResultStore

SHOWN = 3
"""Other checkpoints named in the warning at most (the rest are counted)."""


def identity(pretrained: str) -> str:
    """One spelling per checkpoint: a folder as its absolute path (a relative one as the store
    of any commit meant it: a bundled model's path is the project's, and commits before paths
    started at the current directory wrote every relative path so), a hub id as it is."""
    if is_local(pretrained) or resolve_project_path(pretrained).is_dir():
        return os.path.abspath(resolve_project_path(os.path.expanduser(pretrained)))
    return pretrained


def stored_checkpoints(store_root: Path) -> dict[str, str]:
    """``model.pretrained`` of every checkpoint with a result in ``store_root``, by identity,
    newest record first (a record that cannot be read is passed over: the store itself says so
    when it is asked for it)."""
    found: dict[str, str] = {}
    for key in ResultStore(store_root).stored_keys():
        pretrained = (key.get("model") or {}).get("pretrained")
        if isinstance(pretrained, str):
            found.setdefault(identity(pretrained), pretrained)
    return found


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def distinct_name(pretrained: str, name: str, others: list[str]) -> str:
    """A run name for ``pretrained`` that is not ``name`` and not the others' name of the same
    form: the fewest trailing path parts that tell it apart (``runb_checkpoint_500``)."""
    parts = [p for p in identity(pretrained).split("/") if p]
    other_parts = [[p for p in identity(o).split("/") if p] for o in others]
    for k in range(1, len(parts) + 1):
        candidate = _slug("_".join(parts[-k:]))
        if candidate and candidate != name:
            theirs = {_slug("_".join(o[-k:])) for o in other_parts}
            if candidate not in theirs:
                return candidate
    return f"{name}_2"


def shared_name_warning(store_root: Path, name: str, pretrained: str) -> str | None:
    """The warning for a run of checkpoint ``pretrained`` named ``name`` when results of another
    checkpoint are stored under that name in ``store_root``; None when there are none."""
    others = [
        typed
        for key, typed in stored_checkpoints(store_root).items()
        if key != identity(pretrained)
    ]
    if not others:
        return None
    shown = ", ".join(f"model.pretrained={o}" for o in others[:SHOWN])
    more = f" and {len(others) - SHOWN} more" if len(others) > SHOWN else ""
    return (
        f"warning: the name '{name}' already holds results of another checkpoint ({shown}{more}; "
        f"in {store_root}), and this run's is model.pretrained={pretrained}: MLflow, the run "
        "directories and the report would show two checkpoints as one model. Fix: give this one "
        f"a name of its own, e.g. model.name={distinct_name(pretrained, name, others)}"
    )


def warn_shared_name(store_root: Path, plan: Plan) -> str | None:
    """Say, on the console and in the log, and as a note of the plan (before plan.json is
    written), when the run's name already holds another checkpoint's results in ``store_root``
    (``<outputs_root>/store/<name>``). Returns the warning, or None. Never refuses the run."""
    message = shared_name_warning(store_root, plan.model, plan.model_used.pretrained)
    if message is not None:
        say(message, err=True, level=logging.WARNING)
        plan.notes.append(message.removeprefix("warning: "))
    return message
