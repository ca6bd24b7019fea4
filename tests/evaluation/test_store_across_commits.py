"""A result stored by an earlier commit is reused by this one: fingerprints did not move.

The earlier commit's tree (``git archive``) runs the default command into a store; then this
working tree, copied to the very same folder (task paths are part of a task's config, so the
two must live at one path), runs it again against that store: every dataset must be resumed,
with the numbers the earlier commit wrote.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.paths import PROJECT_ROOT
from tests.conftest import BUNDLED_TASKS, offline_env

BEFORE_LAYERS = "5b5f5eb3c81d20b95fe28ef81158c18289ac4fbf"
"""The last commit before "one layer per room" (#19) moved every module."""


def _git(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["git", *args], cwd=PROJECT_ROOT, check=True, capture_output=True)


def _checkout(commit: str | None, dest: Path) -> None:
    """``commit``'s tree (None: this working tree, uncommitted changes included) at ``dest``."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    if commit is not None:
        archive = _git("archive", "--format=tar", commit).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
        return
    listed = _git("ls-files", "-z", "--cached", "--others", "--exclude-standard").stdout
    for name in filter(None, listed.decode().split("\0")):
        src = PROJECT_ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)


TAIL = ("tracking=none",)


def _default_run(project: Path, out: Path, run_dir: Path) -> dict:
    env = offline_env(out)
    env["PYTHONPATH"] = str(project)  # this tree's harness, not the installed one
    proc = subprocess.run(
        [sys.executable, "-m", "harness", f"outputs_root={out}", f"output_dir={run_dir}", *TAIL],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads((run_dir / "summary.json").read_text())


@pytest.mark.slow
def test_a_store_written_before_the_layers_moved_is_reused(tmp_path):
    try:
        _git("cat-file", "-e", f"{BEFORE_LAYERS}^{{commit}}")
    except subprocess.CalledProcessError:
        pytest.fail(f"commit {BEFORE_LAYERS} is not in this clone (a shallow clone?): fetch it")
    project, out = tmp_path / "project", tmp_path / "outputs"
    _checkout(BEFORE_LAYERS, project)
    before = _default_run(project, out, tmp_path / "run_before")
    assert before["resumed"] == [] and before["failed"] == []
    assert not (tmp_path / "run_before" / "plan.json").exists()  # the earlier code ran
    stored = sorted(p.name for p in (out / "store" / "tiny_char").iterdir())
    assert len(stored) == len(BUNDLED_TASKS)

    _checkout(None, project)
    after = _default_run(project, out, tmp_path / "run_after")
    assert after["resumed"] == BUNDLED_TASKS, "a fingerprint changed: the store is not reused"
    assert sorted(p.name for p in (out / "store" / "tiny_char").iterdir()) == stored
    assert (tmp_path / "run_after" / "plan.json").is_file()  # this tree's code ran
    assert after["engine"] == {}, "a model was loaded although every result was stored"
    for name in BUNDLED_TASKS:
        ours, theirs = after["datasets"][name], before["datasets"][name]
        assert ours["fingerprint"] == theirs["fingerprint"]
        assert ours["metrics"] == theirs["metrics"]
