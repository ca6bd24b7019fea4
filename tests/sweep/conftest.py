"""The local SLURM cluster the ``slurm`` tests run on, started once per session.

``slurm_cluster`` installs Debian's SLURM packages when they are missing and this is a root
Debian machine (CI installs them itself, .ci/run), starts a single-node cluster with
``start_slurm.sh`` (munge, MariaDB + slurmdbd so that ``sacct`` works, slurmctld, slurmd), exports
``SLURM_CONF`` for every SLURM client the tests and the sweeps run, and stops the cluster at the
end when it started it. It skips only where SLURM cannot be installed, saying why, and fails
instead where ``HARNESS_REQUIRE_SLURM=1`` (CI).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.real_parts import unavailable

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
    """Install the packages (root, apt) or skip, saying why SLURM cannot be installed here."""
    missing = _missing()
    why = f"SLURM is not installed here (no {', '.join(missing)})"
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


@pytest.fixture(scope="session")
def slurm_cluster(request: pytest.FixtureRequest) -> dict[str, str]:
    """A running single-node SLURM cluster: ``{"conf": SLURM_CONF, "dir": its folder}``."""
    if _missing():
        _install_or_skip()
    if not Path("/sys/fs/cgroup").is_dir():
        pytest.fail("slurmd needs /sys/fs/cgroup, which this machine does not show")
    folder = Path(
        os.environ.get("SLURM_LOCAL_DIR") or Path(tempfile.gettempdir()) / "harness-slurm"
    )
    folder.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, SLURM_LOCAL_DIR=str(folder))
    log = folder / "start.log"
    started = time.perf_counter()
    # The daemons inherit the script's output: a file, never a pipe someone waits on.
    with log.open("w") as out:
        done = subprocess.run(
            [str(HERE / "start_slurm.sh")],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=300,
            check=False,
        )
    took = time.perf_counter() - started
    text = log.read_text()
    if done.returncode != 0:
        pytest.fail(f"the local SLURM cluster did not start:\n{text[-4000:]}")
    ours = "already running" not in text
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
    if ours:
        with log.open("a") as out:
            subprocess.run(
                [str(HERE / "stop_slurm.sh")],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=120,
                check=False,
            )
