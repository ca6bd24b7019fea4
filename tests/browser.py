"""A real headless browser (Debian's ``chromium``) for the pages harness produces.

Tests that need it call ``require_chromium()``: it skips, saying why, where chromium is missing,
and fails instead when ``HARNESS_REQUIRE_BROWSER=1`` (CI installs chromium, so none skip there).
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

from tests.real_parts import chromium, need

# Root in a container has no user namespace sandbox and no D-Bus; neither matters for a page.
_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
]


def require_chromium() -> str:
    """The chromium executable, or skip (fail under HARNESS_REQUIRE_BROWSER=1) without one."""
    need("browser")
    exe = chromium()
    assert exe is not None
    return exe


def _run(args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    exe = require_chromium()
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        return subprocess.run(
            [exe, *_FLAGS, f"--user-data-dir={profile}", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


def dump_dom(url: str, wait_ms: int = 0, timeout: float = 120) -> str:
    """The page's DOM after it has loaded (and run its scripts for ``wait_ms`` of virtual time)."""
    extra = [f"--virtual-time-budget={wait_ms}"] if wait_ms else []
    proc = _run([*extra, "--dump-dom", url], timeout)
    assert proc.returncode == 0, f"chromium --dump-dom {url} failed: {proc.stderr[-2000:]}"
    return proc.stdout


def screenshot(
    url: str, out: Path, size: str = "1600,1000", wait_ms: int = 0, timeout: float = 120
) -> Path:
    """A PNG of the page as a user would see it."""
    extra = [f"--virtual-time-budget={wait_ms}"] if wait_ms else []
    proc = _run([*extra, f"--window-size={size}", f"--screenshot={out}", url], timeout)
    assert proc.returncode == 0 and out.exists(), (
        f"chromium --screenshot failed: {proc.stderr[-2000:]}"
    )
    return out
