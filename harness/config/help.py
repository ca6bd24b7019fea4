"""``python -m harness --help``: Hydra's help page, with the option lists read from conf/.

The page is Hydra's own help mechanism: ``conf/config.yaml`` selects ``hydra/help: harness``, and
``conf/hydra/help/harness.yaml`` holds its prose (what harness does, examples, footer). The parts
that must stay true to the config files are interpolations of the resolver ``harness_help``
defined here: ``${harness_help:groups}`` lists every option of every group with the one-line
description from its file's header comment, ``${harness_help:settings}`` the top-level settings
with the docstrings of ``RunConfig`` in harness/config/schema.py (and the group keys no option
file spells, ``GROUP_SETTINGS``: ``strategy.engine_args``). Hydra resolves the template only
when it prints the page, so a run only pays for registering the resolver.

Header convention of an option file: an optional ``# @package ...`` line, then a usage command
``# python -m harness ...``, then one comment line that describes the option.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from harness.config.argv import GROUPS, group_options
from harness.paths import CONF_DIR

RESOLVER = "harness_help"
WIDTH = 100

GROUP_SUMMARIES = {
    "model": "which model, with its architecture facts and where its weights are",
    "strategy": "how it is deployed (engine, device, dtype, tp/pp/dp, quantization, batching)",
    "tier": "the resources of one job (GPUs per node, GPU memory and type, nodes, time limit)",
    "dataset": "the lm-eval tasks; several with dataset=[a,b], each with its own settings",
    "tracking": "where metrics and artifacts go (MLflow)",
}

# Flags with which Hydra prints something and exits, without a run directory.
_PRINT_ONLY_FLAGS = ("--help", "-h", "--hydra-help", "--shell-completion", "-sc")


def only_prints(argv: Sequence[str]) -> bool:
    """True when the command line asks Hydra for its help page or for shell completion."""
    return any(arg in _PRINT_ONLY_FLAGS for arg in argv)


def description(path: Path) -> str:
    """The one-line description in an option file's header comment ("" when there is none)."""
    lines = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if not line.startswith("#"):
                break
            text = line[1:].strip()
            if not text.startswith("@package"):
                lines.append(text)
    if lines and lines[0].startswith("python -m harness"):
        lines = lines[1:]
    return lines[0] if lines else ""


def search_dirs(searchpath: Iterable[str]) -> list[Path]:
    """conf/ plus the ``file://`` folders of Hydra's ``hydra.searchpath``."""
    dirs = [CONF_DIR]
    for entry in searchpath:
        if str(entry).startswith("file://"):
            dirs.append(Path(str(entry).removeprefix("file://")))
    return dirs


def option_descriptions(group: str, dirs: Sequence[Path]) -> dict[str, str]:
    """Each option of ``group`` with its description; the first folder holding a name wins."""
    found: dict[str, str] = {}
    for name in group_options(group, dirs):
        paths = (d / group / f"{name}.yaml" for d in dirs)
        found[name] = description(next(p for p in paths if p.is_file()))
    return found


def _rows(rows: Iterable[tuple[str, str]], indent: str = "  ") -> list[str]:
    """Name and text in two columns; long texts wrap under their column."""
    rows = list(rows)
    column = max((len(name) for name, _ in rows), default=0) + 2
    lines = []
    for name, text in rows:
        prefix = f"{indent}{name:<{column}}"
        wrapped = textwrap.wrap(
            text, width=max(WIDTH - len(prefix), 40), break_long_words=False, break_on_hyphens=False
        )
        lines.append((prefix + "\n".join(wrapped[:1])).rstrip())
        lines += [" " * len(prefix) + more for more in wrapped[1:]]
    return lines


def format_groups(dirs: Sequence[Path], chosen: dict[str, str]) -> str:
    """Every group, its options and their descriptions; then the options this command chose."""
    lines = []
    for group in GROUPS:
        lines.append(f"{group}: {GROUP_SUMMARIES.get(group, '')}")
        lines += _rows(option_descriptions(group, dirs).items())
        lines.append("")
    now = " ".join(f"{group}={chosen[group]}" for group in GROUPS if chosen.get(group))
    lines += textwrap.wrap(f"Chosen: {now}", width=WIDTH, subsequent_indent="  ")
    return "\n".join(lines)


def _default_text(node: ast.expr | None) -> str:
    """A dataclass field's default as it is written on the command line."""
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool):
            return str(node.value).lower()
        return "null" if node.value is None else str(node.value)
    if isinstance(node, ast.Call):  # field(default_factory=list) and the like
        for keyword in node.keywords:
            if keyword.arg == "default_factory" and isinstance(keyword.value, ast.Name):
                return {"list": "[]", "dict": "{}"}.get(keyword.value.id, "...")
    return "..."


GROUP_SETTINGS = {"strategy.engine_args": "{max_num_seqs:256,enable_prefix_caching:true}"}
"""Keys inside a group shown among the settings, each with an example value: the ones no option
file of the group spells (its options list their other keys), so that nothing else shows them."""


def settings(config: type | None = None) -> list[tuple[str, str, str]]:
    """(key, default, docstring) of a config dataclass's own settings (RunConfig's unless
    ``config`` names another), read from its source."""
    from harness.config.schema import RunConfig

    (cls,) = ast.parse(textwrap.dedent(inspect.getsource(config or RunConfig))).body
    assert isinstance(cls, ast.ClassDef)
    found = []
    for stmt, after in zip(cls.body, cls.body[1:], strict=False):
        if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
            continue
        key = stmt.target.id
        if key in GROUPS:
            continue
        doc = ""
        if isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant):
            doc = " ".join(str(after.value.value).replace("``", "").split())
        found.append((key, _default_text(stmt.value), doc))
    return found


def group_settings() -> list[tuple[str, str]]:
    """``GROUP_SETTINGS`` as rows: ``group.key=default``, its docstring and its example."""
    from harness.config import schema

    configs = {"strategy": schema.StrategyConfig}
    rows = []
    for name, example in GROUP_SETTINGS.items():
        group, key = name.split(".")
        default, doc = {k: (d, doc) for k, d, doc in settings(configs[group])}[key]
        rows.append((f"{name}={default}", f"{doc} Example: {name}={example}"))
    return rows


def format_settings() -> str:
    """The top-level settings, ``key=default`` and what each does; then ``GROUP_SETTINGS``."""
    rows = [(f"{key}={default}", doc) for key, default, doc in settings()]
    return "\n".join(_rows(rows + group_settings()))


def _resolve(section: str, *, _root_: Any) -> str:
    """The resolver behind ``${harness_help:<section>}`` in conf/hydra/help/harness.yaml."""
    if section == "groups":
        hydra = _root_.hydra
        chosen = {group: str(hydra.runtime.choices.get(group) or "") for group in GROUPS}
        if "dataset" in _root_:
            chosen["dataset"] = "[" + ",".join(str(k) for k in _root_.dataset) + "]"
        text = format_groups(search_dirs(hydra.searchpath), chosen)
    elif section == "settings":
        text = format_settings()
    else:
        raise ValueError(f"harness_help: unknown section {section!r} (groups, settings)")
    return text.replace("$", "$$")  # Hydra puts the page through string.Template


def register() -> None:
    """Make ``${harness_help:...}`` resolvable; the page itself is built only when printed."""
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver(RESOLVER):
        OmegaConf.register_new_resolver(RESOLVER, _resolve)
