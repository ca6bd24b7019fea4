"""Where ``model.pretrained`` points: resolved once, while planning, and recorded in the plan.

A relative path starts where the user stands: the directory ``python -m harness`` was started in
(``hydra.job.chdir`` is false; where it is set true, Hydra's record of that directory), as
``outputs_root`` does. A path-looking value that exists as a folder here is a local checkpoint,
even in a hub id's ``org/name`` shape (the folder wins, and the plan says so). The bundled
models' own paths (a relative ``pretrained:`` in harness's ``conf/model/*.yaml``, e.g.
``plugins/models/tiny_char``) are the project's, from any directory, and stay written as they
are: the result fingerprint holds them, so a stored result of the bundled model is found again
from any directory and by any checkout at one path.

The plan carries the resolved value (``model_facts.pretrained``: an absolute folder, a bundled
project path, or a hub id); the fingerprint, the engines and a sweep's jobs all read it from there.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass
from pathlib import Path

from harness.paths import CONF_DIR, PROJECT_ROOT
from harness.planning.checkpoint import is_local, start_dir

_PRETRAINED_LINE = re.compile(r"^pretrained:\s*['\"]?([^'\"#\s]+)", re.M)


@functools.cache
def bundled_pretrained() -> frozenset[str]:
    """The relative ``pretrained`` of each of harness's own ``conf/model/*.yaml`` that names a
    folder of the project (the bundled models): they mean the project's folder from any cwd."""
    found = set()
    for path in sorted((CONF_DIR / "model").glob("*.yaml")):
        match = _PRETRAINED_LINE.search(path.read_text(encoding="utf-8"))
        if match is None:
            continue
        value = match.group(1)
        if not value.startswith(("/", "~")) and (PROJECT_ROOT / value).is_dir():
            found.add(value)
    return frozenset(found)


@dataclass(frozen=True)
class Located:
    """A ``model.pretrained`` as typed, and what the run loads."""

    typed: str
    """The value as the config or the command line gave it."""
    pretrained: str
    """An absolute folder, a bundled model's project path, or a hub id."""
    note: str | None = None
    """What the plan should say about how it was resolved (None: nothing to say)."""


def locate_pretrained(typed: str, cwd: Path | None = None) -> Located:
    """Resolve ``model.pretrained`` against the current directory (``cwd``; by default the one
    the command was started in, ``start_dir``).

    A bundled model's own path stays project-relative; any other relative path becomes the
    absolute folder under ``cwd``; a hub id (``org/name``) stays a hub id unless a folder of that
    name exists under ``cwd``, which then wins. Nothing is checked here beyond that: a folder
    that is missing or holds no checkpoint is refused by the planner, naming the absolute path.
    """
    bundled = bundled_pretrained()
    if typed in bundled:
        return Located(typed, typed)
    expanded = os.path.expanduser(typed)
    folder = Path(os.path.abspath((cwd or start_dir()) / expanded))
    hub_shaped = not is_local(typed)
    if hub_shaped and not folder.is_dir():
        return Located(typed, typed)
    for value in bundled:  # the bundled folder by another path: written as the bundle writes it
        if folder == Path(os.path.abspath(PROJECT_ROOT / value)):
            return Located(typed, value)
    note = None
    if hub_shaped:
        note = (
            f"model.pretrained={typed}: the folder {folder} in the current directory is loaded, "
            f"not the hub's {typed} (a local folder wins over a hub id of the same name; run "
            "from another directory, or rename the folder, to use the hub's)"
        )
    elif not os.path.isabs(expanded):
        note = f"model.pretrained={typed} is {folder} (relative to the current directory)"
    return Located(typed, str(folder), note)
