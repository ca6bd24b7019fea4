"""The package's shape: one layer per folder, every import pointing down, no circle.

The rules are data (``LAYERS``, lowest first, and ``FORBIDDEN``); the test walks ``harness/``
with ``ast`` and fails on any import, at module level, inside a function or under
``TYPE_CHECKING``, that runs from a lower layer up to a higher one, between two rooms of the same
layer, or into another module's private names. ``../shared/DESIGN.md`` ("Layout") draws the same.
"""

from __future__ import annotations

import ast
from pathlib import Path

from harness.paths import PROJECT_ROOT

PACKAGE = PROJECT_ROOT / "harness"

LAYERS: tuple[tuple[str, ...], ...] = (
    ("harness", "harness.secrets", "harness.errors", "harness.paths"),
    ("harness.console",),
    ("harness.machine",),
    ("harness.config",),
    ("harness.planning",),
    ("harness.record", "harness.views"),
    ("harness.engines",),
    ("harness.telemetry",),
    ("harness.tracking",),
    ("harness.evaluation",),
    ("harness.report",),
    ("harness.sweep",),
    ("harness.runner",),
    ("harness.replay", "harness.app"),
    ("harness.__main__",),
)
"""Rooms from the ground floor up. A module may import its own room and any room of a lower
layer; rooms of one layer do not import each other."""

FORBIDDEN: dict[str, tuple[str, ...]] = {
    "harness.secrets": ("harness",),
    "harness.config": ("harness.engines", "harness.planning", "harness.evaluation"),
    "harness.planning": ("torch", "vllm", "ray", "lm_eval", "mlflow", "harness.engines"),
    "harness.telemetry": ("harness.tracking", "mlflow"),
    "harness.record": ("harness.tracking", "mlflow"),
}
"""Imports a room must never make, whatever the layers say (``harness.secrets`` imports nothing
of harness; the planner imports no engine nor any heavy library)."""


def module_name(path: Path) -> str:
    parts = path.relative_to(PROJECT_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[tuple[str, list[str], int]]:
    """(module imported, names taken from it, line) for every import in the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    here = module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, [], node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.append((target, [a.name for a in node.names], node.lineno))
    return found


def room_of(module: str) -> str | None:
    """The longest room name that ``module`` is, or lies inside."""
    rooms = [room for layer in LAYERS for room in layer]
    inside = [r for r in rooms if module == r or module.startswith(r + ".")]
    inside = [r for r in inside if r != "harness" or module == "harness"]
    return max(inside, key=len) if inside else None


def layer_of(room: str) -> int:
    return next(i for i, layer in enumerate(LAYERS) if room in layer)


def _starts(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def violations() -> list[str]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = module_name(path)
        room = room_of(module)
        where = f"{path.relative_to(PROJECT_ROOT)}"
        if room is None:
            found.append(f"{where}: module {module} is in no room of LAYERS")
            continue
        for target, names, line in imports(path):
            for owner, banned in FORBIDDEN.items():
                if _starts(module, owner) and any(_starts(target, b) for b in banned):
                    found.append(f"{where}:{line}: {owner} must not import {target}")
            if not _starts(target, "harness"):
                continue
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            if private:
                found.append(f"{where}:{line}: imports private {', '.join(private)} of {target}")
            target_room = room_of(target)
            if target_room is None or target_room == room:
                continue
            if layer_of(target_room) > layer_of(room):
                found.append(f"{where}:{line}: {room} imports {target} of a higher layer")
            elif layer_of(target_room) == layer_of(room):
                found.append(f"{where}:{line}: {room} imports {target} of the same layer")
    return found


def test_every_import_points_down():
    assert violations() == []


def test_every_module_has_a_room_and_every_room_exists():
    rooms = {room for layer in LAYERS for room in layer}
    for room in rooms:
        as_path = PROJECT_ROOT / Path(*room.split("."))
        assert as_path.is_dir() or as_path.with_suffix(".py").is_file(), room


def test_the_checker_catches_an_upward_import():
    """The rules bite: a config module that imports an engine is reported."""
    bad = PACKAGE / "config" / "_layering_probe.py"
    bad.write_text(
        "from harness.engines import build_engine\nfrom harness.record.files import _x\n"
    )
    try:
        found = violations()
    finally:
        bad.unlink()
    assert any("config must not import harness.engines" in v for v in found)
    assert any("harness.config imports harness.engines of a higher layer" in v for v in found)
    assert any("imports private _x" in v for v in found)
