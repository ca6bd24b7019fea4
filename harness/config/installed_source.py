"""Installed libraries' own source, read as text and parsed with ``ast``: nothing is imported.

The checks made before a model loads (``engine_args`` and ``gen_kwargs`` keys) ask what the
installed lm-eval, transformers and vLLM take. Importing them would cost seconds (vLLM, torch)
on every run, and plan-only answers in a third of a second, so their classes are read instead.
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path


def installed_source(module: str, relative: str) -> str | None:
    """The text of ``relative`` inside the installed package ``module``, found without
    importing it; None where the package or the file is not here."""
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / relative
    return path.read_text(encoding="utf-8") if path.is_file() else None


def class_node(source: str, name: str) -> ast.ClassDef | None:
    """The class ``name`` defined anywhere in ``source``."""
    return next(
        (n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.ClassDef) and n.name == name),
        None,
    )


def annotated_fields(source: str, class_name: str) -> set[str]:
    """The annotated class attributes of ``class_name`` (a dataclass's or msgspec's fields)."""
    found = class_node(source, class_name)
    if found is None:
        return set()
    return {
        st.target.id
        for st in found.body
        if isinstance(st, ast.AnnAssign) and isinstance(st.target, ast.Name)
    }
