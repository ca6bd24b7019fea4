"""The documentation stands alone and stays true to what runs: README in one screen with its map
into docs/, the test commands equal to CI's, and nothing in the repository pointing outside it."""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

from harness.paths import PROJECT_ROOT

README = PROJECT_ROOT / "README.md"
DOCS = PROJECT_ROOT / "docs"
PAGES = (
    "getting-started",
    "run-directory",
    "coming-from-lm-eval",
    "configuration",
    "planning",
    "engines",
    "services",
    "sweeps",
    "reliability",
    "tracking-and-report",
    "telemetry",
    "testing",
    "architecture",
)
"""The pages README's map leads to (issue 32; services: issue 33)."""
SKIPPED = {
    *(".git", ".venv", "outputs", "gpu_wheels"),
    *("__pycache__", ".hypothesis", ".pytest_cache", ".mypy_cache", ".ruff_cache"),
}
"""Folders that are not the project's own text: virtual environments, run outputs, caches."""
TEXT = {".py", ".md", ".toml", ".yaml", ".yml", ".sh", ".txt", ".cfg", ".ini", ".jinja", ""}
"""Suffixes of the files searched (``.ci/run`` has none)."""


def commands(text: str, needle: str) -> list[str]:
    """The lines of ``text``'s code blocks that contain ``needle``."""
    blocks = text.split("```")[1::2]
    return [line.strip() for b in blocks for line in b.splitlines() if needle in line]


def ci_test_command() -> str:
    line = next(
        ln for ln in (PROJECT_ROOT / ".ci" / "run").read_text().splitlines()
        if ln.startswith("TEST_COMMAND=")
    )  # fmt: skip
    return shlex.split(line.split("=", 1)[1])[0]


def test_readme_is_one_screen_with_a_map_to_every_page():
    text = README.read_text()
    assert len(text.splitlines()) < 200
    linked = set(re.findall(r"\(docs/([a-z-]+)\.md\)", text))
    assert linked >= set(PAGES), set(PAGES) - linked
    for page in PAGES:
        assert (DOCS / f"{page}.md").is_file(), page


def test_every_link_between_pages_resolves():
    for page in [README, *sorted(DOCS.glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#:]+\.md)(?:#[^)]*)?\)", page.read_text()):
            assert (page.parent / target).is_file(), f"{page.name} links {target}"


def test_the_full_suite_is_what_ci_runs_and_the_fast_tier_is_one_command():
    full = ci_test_command()
    for page in (README, DOCS / "testing.md"):
        text = page.read_text()
        assert full in commands(text, "python -m pytest -n 2"), page.name
        fast = commands(text, "python -m pytest -m fast")
        assert fast and all('pip install -e ".[test]"' in c for c in fast), page.name


def project_text_files() -> list[Path]:
    """The project's own text files (folders in ``SKIPPED`` and egg-info not entered)."""
    found = []
    for folder, dirs, files in os.walk(PROJECT_ROOT):
        dirs[:] = [d for d in dirs if d not in SKIPPED and not d.endswith(".egg-info")]
        found += [Path(folder, f) for f in files if Path(f).suffix in TEXT]
    return sorted(found)


def test_nothing_in_the_repository_points_outside_it():
    """A clone has no design document beside it: every fact the code relies on is in docs/."""
    # built from its parts so that this file does not itself cite the folder it forbids
    folder = "shared"
    outside = re.compile(rf"\.\./{folder}|{folder}/DESIGN|{folder}/notes|{folder}/STYLE")
    found = []
    for path in project_text_files():
        if path == Path(__file__).resolve():
            continue  # this file names the patterns
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        found += [f"{path.relative_to(PROJECT_ROOT)}" for _ in outside.finditer(text)]
    assert found == [], found


def test_the_architecture_page_has_its_parts():
    text = (DOCS / "architecture.md").read_text()
    for heading in ("## Layout", "## Layers", "## The data flow of one run", "## Measured facts"):
        assert heading in text, heading
    assert "## Where harness leans on other libraries' internals" in text
    for library in ("lm-eval", "Hydra", "submitit", "vLLM", "MLflow", "Ray", "transformers"):
        assert f"### {library}" in text, library
