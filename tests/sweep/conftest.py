"""The local SLURM cluster the ``slurm`` tests run on, started once per session.

``local_slurm`` starts a single-node cluster with ``start_slurm.sh`` (munge, MariaDB + slurmdbd
so that ``sacct`` works, slurmctld, slurmd), exports ``SLURM_CONF`` for every SLURM client the
tests and the sweeps run, and stops the cluster at the end when it started it. Where Debian's
SLURM packages are missing it installs them (root, apt, about 45 s) only when SLURM is required
(``HARNESS_REQUIRE_SLURM=1`` or ``CI``: tests/real_parts.py), and fails if it cannot; on a
developer's plain run it changes nothing on the system and skips, with the command that installs
them. CI installs them itself first (.ci/run).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.real_parts import required, unavailable

HERE = Path(__file__).parent
PACKAGES = ["munge", "slurmctld", "slurmd", "slurm-client", "slurmdbd"]
PACKAGES += ["slurm-wlm-mysql-plugin", "mariadb-server"]
APT_LINE = "apt-get install -y --no-install-recommends " + " ".join(PACKAGES)
BINARIES = ("munged", "slurmctld", "slurmd", "slurmdbd", "mariadbd", "sbatch", "sacct")


def _missing() -> list[str]:
    return [b for b in BINARIES if shutil.which(b) is None]


def _skip(reason: str) -> None:
    """Skip, saying why; where SLURM is required (CI), fail (tests/real_parts.py)."""
    unavailable("slurm", reason)


def _install_or_skip() -> None:
    """Install the packages (root, apt) where SLURM is required, or skip saying how to."""
    missing = _missing()
    why = f"SLURM is not installed here (no {', '.join(missing)})"
    if not required("slurm"):  # a developer's run installs nothing on the system
        _skip(
            f"{why}; install it (Debian: sudo apt-get update && sudo {APT_LINE}), or let the "
            "tests install it as CI does: HARNESS_REQUIRE_SLURM=1"
        )
    if shutil.which("apt-get") is None:
        _skip(
            f"{why}, and this is not a Debian-like system; install SLURM with munge and "
            "slurmdbd (with MariaDB), as tests/sweep/start_slurm.sh expects"
        )
    if os.geteuid() != 0:
        _skip(f"{why}, and installing it needs root: sudo apt-get update && sudo {APT_LINE}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update", "-qq"], APT_LINE.split()):
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            _skip(f"{why}, and `{' '.join(cmd)}` failed: {done.stderr.strip()[-500:]}")
    if _missing():
        _skip(f"{why}; `{APT_LINE}` did not install {', '.join(_missing())}")


def _report(config: pytest.Config, line: str) -> None:
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(line)


def _script(name: str, env: dict[str, str], log: Path, mode: str, timeout: float) -> Any:
    """Run tests/sweep/<name> with its output in ``log`` (the daemons it starts inherit it: a
    file, never a pipe someone waits on)."""
    with log.open(mode) as out:
        return subprocess.run(
            [str(HERE / name)], env=env, stdout=out, stderr=subprocess.STDOUT, timeout=timeout,
            check=False,
        )  # fmt: skip


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """The cluster to this process alone while in the block (a file lock in its folder)."""
    import fcntl

    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "tests.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _users(folder: Path, change: int) -> int:
    """The pytest sessions using the cluster now, after ``change`` (call it locked)."""
    path = folder / "tests.users"
    users = max(0, int(path.read_text() or 0) if path.is_file() else 0) + change
    path.write_text(str(users))
    return users


@pytest.fixture
def slurm_cluster(local_slurm: dict[str, str]) -> Iterator[dict[str, str]]:
    """The local SLURM cluster, to this test alone: the tests of every pytest-xdist worker share
    one cluster of two CPUs, and a job of one test waiting for the CPUs another test's jobs hold
    would make time limits and waits depend on what else runs."""
    with _locked(Path(local_slurm["dir"])):
        yield local_slurm


@pytest.fixture(scope="session")
def local_slurm(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    """A running single-node SLURM cluster: ``{"conf": SLURM_CONF, "dir": its folder}``.

    Every pytest-xdist worker that needs it comes here; the first starts it, and the last to
    leave stops it if a session of these tests started it (a cluster started by hand is left
    running). A worker's session can end while another's tests still use the cluster."""
    if _missing():
        _install_or_skip()
    if not Path("/sys/fs/cgroup").is_dir():
        pytest.fail("slurmd needs /sys/fs/cgroup, which this machine does not show")
    folder = Path(
        os.environ.get("SLURM_LOCAL_DIR") or Path(tempfile.gettempdir()) / "harness-slurm"
    )
    env = dict(os.environ, SLURM_LOCAL_DIR=str(folder))
    log = folder / "start.log"
    marker = folder / "tests.started"
    with _locked(folder):
        started = time.perf_counter()
        done = _script("start_slurm.sh", env, log, "w", timeout=300)
        took = time.perf_counter() - started
        text = log.read_text()
        if done.returncode != 0:
            pytest.fail(f"the local SLURM cluster did not start:\n{text[-4000:]}")
        ours = "already running" not in text
        if ours:  # nobody used it before: a count left by a killed session is void
            marker.write_text("started by a test session\n")
            (folder / "tests.users").write_text("0")
        _users(folder, +1)
    conf = str(folder / "etc" / "slurm.conf")
    before = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = conf
    _report(
        request.config,
        f"\nlocal SLURM cluster {'started' if ours else 'found running'} "
        f"in {took:.1f}s (SLURM_CONF={conf})",
    )
    yield {"conf": conf, "dir": str(folder)}
    if before is None:
        os.environ.pop("SLURM_CONF", None)
    else:
        os.environ["SLURM_CONF"] = before
    with _locked(folder):
        if _users(folder, -1) == 0 and marker.is_file():
            marker.unlink()
            _script("stop_slurm.sh", env, log, "a", timeout=120)
