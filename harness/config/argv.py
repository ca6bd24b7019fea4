"""Checks on the command line that must happen before Hydra composes and creates its run dir.

Hydra reports ``dataset=[a,typo]`` as "Could not load 'dataset/typo'" without listing the
options, and an unwritable output folder as a traceback from its own run-dir creation; these
checks name the value, the rule and the fix instead.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path

from harness.errors import did_you_mean
from harness.paths import CONF_DIR

GROUPS = ("model", "strategy", "tier", "dataset", "tracking")
TASK_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_\-]*$")
"""A dataset name without an option file is taken as lm-eval's task or group of that name
(plugins/hydra_plugins/harness_launcher/task_source.py answers it; lm-eval's index checks it)."""
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


def searchpath_problems(argv: Sequence[str]) -> list[str]:
    """``hydra.searchpath`` entries Hydra would ignore without a word: a path with no scheme
    (Hydra wants ``file://`` or ``pkg://``), or a ``file://`` folder that does not exist."""
    problems = []
    for arg in argv:
        if not arg.lstrip("+").startswith("hydra.searchpath="):
            continue
        for entry in (e.strip() for e in re.split(r"[\[\],]", arg.split("=", 1)[1])):
            if not entry or entry.startswith(("pkg://", TASK_SOURCE)):
                continue
            if not entry.startswith("file://"):
                problems.append(
                    f"hydra.searchpath entry {entry!r} has no scheme, and Hydra ignores such an "
                    f"entry without a word. Fix: hydra.searchpath=[file://{entry}]"
                )
            elif not Path(entry.removeprefix("file://")).is_dir():
                problems.append(
                    f"hydra.searchpath entry {entry!r}: no such folder "
                    f"({Path(entry.removeprefix('file://')).resolve()}). Fix: the folder that "
                    "holds your config groups (model/, dataset/, ...), relative to here or absolute"
                )
    return problems


TASK_SOURCE = "lmeval://tasks"
"""The config source that answers ``dataset/<name>`` for any lm-eval task name
(plugins/hydra_plugins/harness_launcher/task_source.py)."""


def with_task_source(argv: Sequence[str]) -> list[str]:
    """``argv`` with ``lmeval://tasks`` last on Hydra's search path when a ``dataset`` override
    names a dataset no option file has (any lm-eval task by its own name). Last: after the
    user's own ``hydra.searchpath`` folders, whose option files win (Hydra appends the command
    line's search path after every plugin's entry, so it goes into that list)."""
    dirs = search_dirs(argv)
    options = set(group_options("dataset", dirs))
    named = [
        name.strip()
        for arg in argv
        if (match := _OVERRIDE.match(arg)) and match["group"] == "dataset"
        for name in re.split(r"[\[\],]", match["value"])
        if name.strip()
    ]
    if all(name in options or not TASK_NAME.match(name) for name in named):
        return list(argv)
    return with_search_path(argv, TASK_SOURCE, first=False)


def with_search_path(argv: Sequence[str], entry: str, *, first: bool) -> list[str]:
    """``argv`` with ``entry`` on Hydra's search path: into the last ``hydra.searchpath=[...]``
    the command line gives (first or last in it), or as a new one."""
    out = list(argv)
    given = [i for i, arg in enumerate(out) if arg.lstrip("+").startswith("hydra.searchpath=")]
    if not given:
        return [*out, f"hydra.searchpath=[{entry}]"]
    key, _, value = out[given[-1]].partition("=")
    entries = [e.strip() for e in value.strip().strip("[]").split(",") if e.strip()]
    entries = [entry, *entries] if first else [*entries, entry]
    out[given[-1]] = f"{key}=[{','.join(entries)}]"
    return out


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
            if group == "dataset" and TASK_NAME.match(name):
                continue  # any lm-eval task by its own name: checked against lm-eval's index
            if name not in options and not name.startswith("${"):
                problems.append(
                    f"{group}={name}: no such option in config group '{group}'."
                    f"{did_you_mean(name, options)} Options: {', '.join(options)} "
                    f"(files in {', '.join(str(d / group) for d in dirs)})."
                )
    return problems


def override_value(argv: Sequence[str], key: str) -> str | None:
    """The value of ``key=...`` (or ``+key=...``) on the command line, if given."""
    for arg in argv:
        name, sep, value = arg.lstrip("+").partition("=")
        if sep and name == key:
            return value
    return None


def writable_problem(path: Path, what: str) -> str | None:
    """Why ``path`` cannot hold our files (made if missing), or None when it can."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        return (
            f"{what}={str(path)!r} is not a writable folder ({err.strerror or err}). Fix: point "
            f"{what} at a folder you can write, e.g. {what}={Path.home() / 'harness-outputs'}."
        )
    return None


def output_problems(argv: Sequence[str]) -> list[str]:
    """Output folders named on the command line (or the default ``outputs``) must be writable."""
    problems = []
    for key, default in (
        ("outputs_root", "outputs"),
        ("output_dir", None),
        ("hydra.run.dir", None),
    ):
        value = override_value(argv, key) or default
        if value and "${" not in value:
            problem = writable_problem(Path(os.path.expanduser(value)), key)
            if problem:
                problems.append(problem)
    return problems


def required_value_problems(argv: Sequence[str]) -> list[str]:
    """Values an option file leaves to the command line (``???``, e.g. ``model=hf``'s
    ``pretrained``) that the command line does not give; Hydra would fail resolving its run dir."""
    problems = []
    dirs = search_dirs(argv)
    for arg in argv:
        match = _OVERRIDE.match(arg)
        if not match or match["group"] not in ("model", "strategy", "tier", "tracking"):
            continue
        group, option = match["group"], match["value"]
        files = [
            d / group / f"{option}.yaml" for d in dirs if (d / group / f"{option}.yaml").is_file()
        ]
        if not files:
            continue
        for line in files[0].read_text().splitlines():
            key, sep, value = line.partition(":")
            if sep and value.strip() == "???" and override_value(argv, f"{group}.{key}") is None:
                problems.append(
                    f"{group}={option} needs {group}.{key}=<value>: {files[0]} leaves it to the "
                    f"command line. Fix: add {group}.{key}=..."
                    + (
                        " (a hub id like Qwen/Qwen3-8B, or a local checkpoint folder)."
                        if (group, key) == ("model", "pretrained")
                        else "."
                    )
                )
    return problems


def unselected_dataset_problems(argv: Sequence[str]) -> list[str]:
    """``dataset.<name>.<key>=v`` for a dataset that ``dataset=[...]`` does not select: Hydra
    answers "Key '<name>' is not in struct" and suggests ``+dataset.<name>.<key>=v``, which
    fails too; the right form selects the dataset. (A sweep's several lists are left to it.)"""
    if "-m" in argv or "--multirun" in argv:
        return []
    given = [a.split("=", 1)[1] for a in argv if a.lstrip("+~").startswith("dataset=")]
    if not given or "]," in given[-1]:
        return []
    selected = [n.strip() for n in re.split(r"[\[\],]", given[-1]) if n.strip()]
    problems = []
    for arg in argv:
        key, sep, value = arg.lstrip("+~").partition("=")
        parts = key.split(".")
        if not sep or len(parts) < 3 or parts[0] != "dataset" or parts[1] in selected:
            continue
        both = ",".join([*selected, parts[1]])
        problems.append(
            f"{arg}: dataset '{parts[1]}' is not selected (dataset=[{','.join(selected)}]), so "
            f"it has no settings to change. Fix: dataset=[{both}] {key}={value} (no '+': "
            "the dataset's settings exist once it is selected)."
        )
    return problems


def unquoted_equals_problems(argv: Sequence[str]) -> list[str]:
    """``key=a=b``: a value with an unquoted ``=``, as lm-eval's ``--gen_kwargs max_gen_toks=2``
    is written, which Hydra's grammar cannot parse ("mismatched input '='"). Named here with the
    two forms Hydra reads (the shell's quotes around Hydra's)."""
    problems = []
    for arg in argv:
        if arg.startswith("-"):
            continue
        key, sep, value = arg.partition("=")
        if not sep or "=" not in value or value[:1] in ("'", '"', "{", "["):
            continue
        pairs = [p.partition("=") for p in value.split(",")]
        mapping = "{" + ",".join(f"{k}:{v}" for k, _, v in pairs) + "}"
        as_mapping = f"{key}={mapping}"  # a comma needs the shell's quotes (brace expansion)
        problems.append(
            f"{arg}: the value of {key.lstrip('+~')} holds an unquoted '=', which Hydra cannot "
            f"parse (lm-eval's command line takes it; Hydra needs quotes or a mapping). Fix: "
            f"\"{key}='{value}'\" (quoted for the shell and for Hydra) or "
            + (f"'{as_mapping}'." if "," in value else f"{as_mapping}.")
        )
    return problems
