"""Where the project's own files live, so relative paths in configs mean the same from any cwd."""

from __future__ import annotations

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
"""The checkout that holds harness/, conf/ and plugins/ (harness is installed editable)."""

CONF_DIR = PROJECT_ROOT / "conf"
PLUGINS_DIR = PROJECT_ROOT / "plugins"


def resolve_project_path(path: str | Path) -> Path:
    """Absolute paths stay as they are; relative ones are taken from the project root."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else PROJECT_ROOT / p
