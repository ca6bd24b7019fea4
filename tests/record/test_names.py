"""Every file of a run directory and of the result store is named in ``harness/record/`` only.

An ``ast`` walk of every other module of ``harness/`` finds no string that spells one of the run
directory's files (``config.yaml``, ``summary.json``, ``results/<dataset>.error.json``, ...) as a
path, nor a path joined with one of its folders or the store's: each reader asks
``RunDirectory`` (or ``ResultStore``) instead. Prose (docstrings, messages with spaces) may name
them; a path may not.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from harness.paths import CONF_DIR, PROJECT_ROOT
from harness.record.rundir import RunDirectory

PACKAGE = PROJECT_ROOT / "harness"
RECORD = PACKAGE / "record"

FILE_NAMES = (
    RunDirectory.CONFIG,
    RunDirectory.PLAN,
    RunDirectory.EVENTS,
    RunDirectory.SUMMARY,
    RunDirectory.REPRODUCIBILITY,
    RunDirectory.LOG,
    *RunDirectory.TELEMETRY,
    ".error.json",
    ".jsonl.gz",
)
"""Run-directory file names (and the endings of per-dataset ones) no path outside record/ spells."""
SPELLED = re.compile("|".join(rf"{re.escape(name)}(?!\w)" for name in FILE_NAMES))
"""One of them, whole (``harness.logged``, a tag, is not ``harness.log``)."""
FOLDERS = (RunDirectory.RESULTS, RunDirectory.SAMPLES, "store", "journal")
"""Folders of the run directory and of the store that no path outside record/ is joined with."""


def _prose(tree: ast.AST) -> set[int]:
    """Ids of the string constants that are docstrings (a statement of its own)."""
    return {
        id(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
    }


def spelled(path: Path) -> list[str]:
    """Each place in ``path`` that spells a run-directory or store name as a path."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = _prose(tree)
    where = path.relative_to(PROJECT_ROOT)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            right = node.right
            if isinstance(right, ast.Constant) and right.value in FOLDERS:
                found.append(f"{where}:{node.lineno}: joins {right.value!r}")
        if not (isinstance(node, ast.Constant) and isinstance(node.value, str)):
            continue
        text = node.value
        if id(node) in docstrings or any(c.isspace() for c in text):
            continue
        hit = SPELLED.search(text)
        if hit:
            found.append(f"{where}:{node.lineno}: spells {hit.group()!r} in {text!r}")
    return found


def test_no_run_directory_name_is_spelled_outside_record():
    outside = [p for p in sorted(PACKAGE.rglob("*.py")) if RECORD not in p.parents]
    assert outside
    found = [hit for path in outside for hit in spelled(path)]
    assert found == []


def test_the_checker_finds_a_spelled_name(tmp_path):
    probe = PACKAGE / "_names_probe.py"
    probe.write_text(
        '"""Reads summary.json (prose: fine)."""\n'
        "from pathlib import Path\n"
        "def f(root: Path, name: str) -> list[Path]:\n"
        '    return [root / "summary.json", root / "results", root / f"{name}.error.json"]\n'
    )
    try:
        found = spelled(probe)
    finally:
        probe.unlink()
    assert len(found) == 3, found
    assert any("'summary.json'" in f for f in found)
    assert any("joins 'results'" in f for f in found)
    assert any("'.error.json'" in f for f in found)


def test_hydra_writes_the_log_run_directory_names():
    """The run's log is Hydra's file handler (conf/config.yaml): the same file ``RunDirectory``
    names, which a sweep's outcome points at."""
    config = (CONF_DIR / "config.yaml").read_text(encoding="utf-8")
    assert f"filename: ${{hydra.runtime.output_dir}}/{RunDirectory.LOG}\n" in config
