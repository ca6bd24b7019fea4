"""Check config-group choices on the command line before Hydra does, to suggest the right name.

Hydra reports ``dataset=[a,typo]`` as "Could not load 'dataset/typo'" without listing the
options; this check names the group, the closest options and all the others.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from harness.errors import did_you_mean
from harness.paths import CONF_DIR

GROUPS = ("model", "strategy", "tier", "dataset", "tracking")
_OVERRIDE = re.compile(r"^\+{0,2}(?P<group>[a-z_]+)=(?P<value>.+)$")


def search_dirs(argv: Sequence[str]) -> list[Path]:
    """conf/ plus the folders a ``hydra.searchpath=[file://...]`` override adds."""
    dirs = [CONF_DIR]
    for arg in argv:
        if arg.lstrip("+").startswith("hydra.searchpath="):
            for entry in re.split(r"[\[\],]", arg.split("=", 1)[1]):
                if entry.strip().startswith("file://"):
                    dirs.append(Path(entry.strip().removeprefix("file://")))
    return dirs


def group_options(group: str, dirs: Sequence[Path] = (CONF_DIR,)) -> list[str]:
    """The option names of a config group: the YAML files in ``<dir>/<group>/``."""
    return sorted({p.stem for d in dirs for p in (d / group).glob("*.yaml")})


def check_group_choices(argv: Sequence[str]) -> list[str]:
    """Problems with ``group=option`` overrides (also lists and sweeps: ``a,b`` or ``[a,b]``)."""
    problems = []
    dirs = search_dirs(argv)
    for arg in argv:
        match = _OVERRIDE.match(arg)
        if not match or match["group"] not in GROUPS:
            continue
        group = match["group"]
        options = group_options(group, dirs)
        names = [n.strip() for n in re.split(r"[\[\],]", match["value"]) if n.strip()]
        for name in names:
            if name not in options and not name.startswith("${"):
                problems.append(
                    f"{group}={name}: no such option in config group '{group}'."
                    f"{did_you_mean(name, options)} Options: {', '.join(options)} "
                    f"(files in {', '.join(str(d / group) for d in dirs)})."
                )
    return problems
