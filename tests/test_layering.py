"""The package's shape: one layer per folder, every import pointing down, no circle.

The rules are data (``LAYERS``, lowest first, ``FOLDER_LAYERS`` for the files inside a folder, and
``FORBIDDEN``); the test walks ``harness/`` with ``ast`` and fails on any import that runs from a
lower layer up to a higher one, between two rooms of the same layer, or into another module's
private names, and on any circle between files.

Every import counts, wherever it is written: at module level, inside a function (an import
deferred to call time still ties the two files: the circle between ``engines/process.py`` and
``engines/proxy.py`` was one), and under ``TYPE_CHECKING`` (a file that names another's types
knows that file). docs/architecture.md ("Layers") draws the same rules.
"""

from __future__ import annotations

import ast
from pathlib import Path

from harness.paths import PROJECT_ROOT

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
    ("harness.evaluation", "harness.compare"),
    ("harness.report",),
    ("harness.sweep",),
    ("harness.service",),
    ("harness.runner",),
    ("harness.replay", "harness.app", "harness.serve", "harness.fetch"),
    ("harness.__main__",),
)
"""Rooms from the ground floor up. A module may import its own room and any room of a lower
layer; rooms of one layer do not import each other."""

FOLDER_LAYERS: dict[str, tuple[tuple[str, ...], ...]] = {
    "harness.engines": (
        ("harness.engines.base",),
        ("harness.engines.vllm_support",),
        ("harness.engines.inprocess",),
        ("harness.engines.process",),
        ("harness.engines.ray",),
        ("harness.engines.remote",),
        ("harness.engines",),
    ),
}
"""The same rule inside a folder, lowest first: engines' protocol at the bottom, vLLM's helpers,
the engines that answer where they are built, the wing that puts one in a process of its own, the
Ray wing (a replica holds such a process), and the table (``__init__``) on top. Folders not named
here have no declared order: their files only must not import in a circle."""

FORBIDDEN: dict[str, tuple[str, ...]] = {
    "harness.secrets": ("harness",),
    "harness.config": ("harness.engines", "harness.planning", "harness.evaluation"),
    "harness.planning": ("torch", "vllm", "ray", "lm_eval", "mlflow", "harness.engines"),
    "harness.telemetry": ("harness.tracking", "mlflow"),
    "harness.record": ("harness.tracking", "mlflow"),
}
"""Imports a room must never make, whatever the layers say (``harness.secrets`` imports nothing
of harness; the planner imports no engine nor any heavy library)."""


def module_name(path: Path, root: Path = PROJECT_ROOT) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(root: Path = PROJECT_ROOT) -> dict[str, Path]:
    """Every module of the ``harness`` package under ``root``, by its dotted name."""
    return {module_name(p, root): p for p in sorted((root / "harness").rglob("*.py"))}


def imports(path: Path, root: Path = PROJECT_ROOT) -> list[tuple[str, list[str], int]]:
    """(module imported, names taken from it, line) for every import in the file, at module
    level, in a function or under ``TYPE_CHECKING`` alike (``ast.walk`` sees them all)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    here = module_name(path, root).split(".")
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


def _starts(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def room_in(layers: tuple[tuple[str, ...], ...], module: str) -> str | None:
    """The longest room of ``layers`` that ``module`` is, or lies inside."""
    rooms = [room for layer in layers for room in layer]
    inside = [r for r in rooms if _starts(module, r)]
    inside = [r for r in inside if r != "harness" or module == "harness"]
    return max(inside, key=len) if inside else None


def room_of(module: str) -> str | None:
    return room_in(LAYERS, module)


def layer_in(layers: tuple[tuple[str, ...], ...], room: str) -> int:
    return next(i for i, layer in enumerate(layers) if room in layer)


def direction(layers: tuple[tuple[str, ...], ...], room: str, target: str) -> str | None:
    """What is wrong with an import from ``room`` into ``target``'s room, if anything."""
    target_room = room_in(layers, target)
    if target_room is None or target_room == room:
        return None
    if layer_in(layers, target_room) > layer_in(layers, room):
        return f"{room} imports {target} of a higher layer"
    if layer_in(layers, target_room) == layer_in(layers, room):
        return f"{room} imports {target} of the same layer"
    return None


def violations(root: Path = PROJECT_ROOT) -> list[str]:
    found = []
    for module, path in modules(root).items():
        room = room_of(module)
        where = f"{path.relative_to(root)}"
        if room is None:
            found.append(f"{where}: module {module} is in no room of LAYERS")
            continue
        folder = next((f for f in FOLDER_LAYERS if _starts(module, f)), None)
        for target, names, line in imports(path, root):
            for owner, banned in FORBIDDEN.items():
                if _starts(module, owner) and any(_starts(target, b) for b in banned):
                    found.append(f"{where}:{line}: {owner} must not import {target}")
            if not _starts(target, "harness"):
                continue
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            if private:
                found.append(f"{where}:{line}: imports private {', '.join(private)} of {target}")
            wrong = direction(LAYERS, room, target)
            if wrong is None and folder is not None and _starts(target, folder):
                inner = FOLDER_LAYERS[folder]
                wrong = direction(inner, room_in(inner, module) or folder, target)
            if wrong:
                found.append(f"{where}:{line}: {wrong}")
    return found


def file_graph(root: Path = PROJECT_ROOT) -> dict[str, set[str]]:
    """Which modules each module of harness imports. ``from pkg import sub`` is an edge to the
    submodule ``sub`` (and to ``pkg`` only for a name that is not a module of it); a package's
    ``__init__`` that Python runs on the way is not counted, as it is not written there."""
    known = modules(root)

    def resolved(target: str) -> str | None:
        parts = target.split(".")
        while parts and ".".join(parts) not in known:
            parts.pop()
        return ".".join(parts) or None

    graph: dict[str, set[str]] = {}
    for module, path in known.items():
        edges = set()
        for target, names, _ in imports(path, root):
            if not _starts(target, "harness"):
                continue
            subs = [f"{target}.{n}" for n in names if f"{target}.{n}" in known]
            edges |= set(subs)
            if not names or len(subs) < len(names):
                edges.add(resolved(target) or target)
        graph[module] = {e for e in edges if e != module and e in known}
    return graph


def circles(root: Path = PROJECT_ROOT) -> list[list[str]]:
    """Every set of modules that import one another round (Tarjan's strongly connected
    components of more than one module), each sorted."""
    graph = file_graph(root)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            part = stack[stack.index(v) :]
            del stack[stack.index(v) :]
            if len(part) > 1:
                found.append(sorted(part))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def test_every_import_points_down():
    assert violations() == []


def test_no_file_imports_itself_round_through_others():
    assert circles() == []


def test_every_module_has_a_room_and_every_room_exists():
    rooms = {room for layer in LAYERS for room in layer}
    rooms |= {room for layers in FOLDER_LAYERS.values() for layer in layers for room in layer}
    for room in rooms:
        as_path = PROJECT_ROOT / Path(*room.split("."))
        assert as_path.is_dir() or as_path.with_suffix(".py").is_file(), room


def plant(root: Path, files: dict[str, str]) -> Path:
    """A package tree under ``root`` (``harness/...``), for the probes below."""
    for name, text in {"harness/__init__.py": "", **files}.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_the_checker_catches_an_upward_import(tmp_path):
    """The rules bite: a config module that imports an engine is reported."""
    root = plant(
        tmp_path,
        {
            "harness/config/_layering_probe.py": (
                "from harness.engines import build_engine\nfrom harness.record.files import _x\n"
            ),
            "harness/engines/base.py": (
                "def later():\n    from harness.engines.process.engine import EngineProcess\n"
            ),
        },
    )
    found = violations(root)
    assert any("config must not import harness.engines" in v for v in found)
    assert any("harness.config imports harness.engines of a higher layer" in v for v in found)
    assert any("imports private _x" in v for v in found)
    assert any(
        "harness.engines.base imports harness.engines.process.engine of a higher layer" in v
        for v in found
    )


def test_the_checker_catches_a_planted_circle(tmp_path):
    """A circle between files of one folder is found, whichever way each import is written:
    module level, inside a function, under TYPE_CHECKING, or a submodule taken from a package."""
    typing_only = "if TYPE_CHECKING:\n    from harness.evaluation import c\n"
    root = plant(
        tmp_path,
        {
            "harness/evaluation/__init__.py": "",
            "harness/evaluation/a.py": "from harness.evaluation.b import B\n",
            "harness/evaluation/b.py": "def later():\n    from harness.evaluation.a import A\n",
            "harness/evaluation/c.py": "from . import d\n",
            "harness/evaluation/d.py": typing_only,
            "harness/evaluation/e.py": "from harness.evaluation import a\n",
        },
    )
    assert circles(root) == [
        ["harness.evaluation.a", "harness.evaluation.b"],
        ["harness.evaluation.c", "harness.evaluation.d"],
    ]
