"""The wheels the GPU check carries to an air-gapped node: the folder built, what travels sized,
and every carried wheel's needs checked against the wheels and the node's own packages.

Imported by benchmarks/gpu_check.py (stdlib and ``packaging`` only: it runs on the node too).
"""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from email.parser import Parser
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WHEELS_TXT = ROOT / "benchmarks" / "gpu_wheels.txt"
WHEELS_DIR = ROOT / "benchmarks" / "gpu_wheels"
"""The default wheel folder (gitignored); the device tool's ``carry`` names it."""
LIMIT_MIB = 64
"""What may travel to the node: the working tree plus the carried wheels."""
PLATFORMS = (
    "manylinux_2_28_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "manylinux1_x86_64",
)
NODE_PYTHON = "3.12.3"
NODE_PACKAGES: dict[str, str | None] = {
    "accelerate": "1.15.0",
    "huggingface-hub": "1.33.0",
    "numpy": "2.5.2",
    "safetensors": "0.8.0",
    "tokenizers": "0.23.2",
    "torch": "2.11.0",
    "transformers": "5.17.0",
    "sentencepiece": "0.2.2",
    **dict.fromkeys(
        [
            "aiohttp",
            "anyio",
            "attrs",
            "certifi",
            "charset-normalizer",
            "click",
            "cloudpickle",
            "colorama",
            "execnet",
            "filelock",
            "fsspec",
            "httpx",
            "hypothesis",
            "idna",
            "iniconfig",
            "jinja2",
            "joblib",
            "lxml",
            "markupsafe",
            "matplotlib",
            "nvidia-ml-py",
            "packaging",
            "pandas",
            "peft",
            "pillow",
            "pluggy",
            "portalocker",
            "psutil",
            "pyarrow",
            "pytest",
            "pytest-timeout",
            "pytest-xdist",
            "python-dateutil",
            "pyyaml",
            "regex",
            "requests",
            "rich",
            "sacrebleu",
            "scikit-learn",
            "scipy",
            "setuptools",
            "six",
            "sortedcontainers",
            "tabulate",
            "threadpoolctl",
            "tqdm",
            "typing-extensions",
            "urllib3",
            "wheel",
            "xxhash",
        ]
    ),
}
"""The GPU node's own packages that harness needs, with the versions known ahead (the device
notes' pip list of its image, 2026-11); None: there, version not known until it runs."""
OWN_ON_NODE = {"torch": "the node's own build", "transformers": "the node's own"}
"""harness pins that the node replaces with its own version on purpose."""
NOT_CARRIED = {
    "mlflow": "tracking=none on the node",
    "pytablewriter": "lm-eval's make_table, which harness never calls",
    "rouge-score": "a metric of lm-eval's built-in tasks, none of which the check runs",
}
"""Needs that stay behind on purpose (gpu_wheels.txt says why)."""


@dataclass(frozen=True)
class Pin:
    """One line of gpu_wheels.txt."""

    name: str
    version: str
    sdist: bool
    """No wheel on PyPI: built here from the source distribution (pure Python)."""


def canonical(name: str) -> str:
    """PEP 503's normal form of a distribution name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_pins(path: Path = WHEELS_TXT) -> list[Pin]:
    """Every ``name==version`` line of ``path`` (``# sdist`` after it marks a build here)."""
    pins = []
    for line in path.read_text().splitlines():
        spec, _, comment = line.partition("#")
        if not spec.strip():
            continue
        name, sep, version = spec.strip().partition("==")
        if not sep or not version:
            raise ValueError(f"{path.name}: {line!r} is not name==version")
        pins.append(Pin(name.strip(), version.strip(), comment.strip() == "sdist"))
    return pins


def wheel_dist(path: Path) -> tuple[str, str]:
    """The distribution name and version a wheel file's name states."""
    name, version = path.name.split("-")[:2]
    return canonical(name), version


def build_folder(pins: list[Pin], folder: Path) -> list[str]:
    """Download (or build) every pinned wheel missing from ``folder``; remove the others.

    Returns one line per action taken. Needs PyPI (the dry run's machine, never the node).
    """
    folder.mkdir(parents=True, exist_ok=True)
    wanted = {(canonical(p.name), p.version) for p in pins}
    actions = []
    for whl in sorted(folder.glob("*.whl")):
        if wheel_dist(whl) not in wanted:  # two versions of one name stop the whole install
            whl.unlink()
            actions.append(f"removed {whl.name}")
    have = {wheel_dist(w) for w in folder.glob("*.whl")}
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    for pin in pins:
        if (canonical(pin.name), pin.version) in have:
            continue
        spec = f"{pin.name}=={pin.version}"
        if pin.sdist:
            cmd = [*pip, "wheel", "--no-deps", "--no-binary", pin.name, "-w", str(folder), spec]
        else:
            plats = [a for p in PLATFORMS for a in ("--platform", p)]
            cmd = [*pip, "download", "--no-deps", "--only-binary=:all:", "--python-version"]
            cmd += ["3.12", "--implementation", "cp", *plats, "-d", str(folder), spec]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd[3:5])} {spec} failed:\n{done.stderr[-2000:]}")
        actions.append(f"{'built' if pin.sdist else 'downloaded'} {spec}")
    return actions


def travelling_files(root: Path = ROOT) -> list[Path]:
    """What the device tool sends without being told: tracked and untracked-not-ignored files."""
    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=root,
        capture_output=True,
        check=True,
    ).stdout
    return [root / p for p in out.decode().split("\0") if p and (root / p).exists()]


def travelling_size(wheels: Path, root: Path = ROOT) -> dict[str, float]:
    """MiB of the working tree, of the wheel folder, and of both against the limit."""
    tree = sum(p.lstat().st_size for p in travelling_files(root))
    carried = sum(p.stat().st_size for p in wheels.rglob("*") if p.is_file())
    mib = 1024**2
    return {
        "tree_mib": round(tree / mib, 2),
        "wheels_mib": round(carried / mib, 2),
        "total_mib": round((tree + carried) / mib, 2),
        "limit_mib": LIMIT_MIB,
    }


def wheel_requires(whl: Path) -> list[str]:
    """The Requires-Dist lines of a wheel's METADATA."""
    with zipfile.ZipFile(whl) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        message = Parser().parsestr(z.read(meta).decode())
    return message.get_all("Requires-Dist") or []


def node_environment() -> dict[str, str]:
    """PEP 508 marker values of the node's interpreter (no extra asked for)."""
    return {
        "extra": "",
        "python_version": NODE_PYTHON.rsplit(".", 1)[0],
        "python_full_version": NODE_PYTHON,
        "sys_platform": "linux",
        "platform_system": "Linux",
        "platform_machine": "x86_64",
        "os_name": "posix",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
    }


def closure(
    wheels: Path, installed: dict[str, str | None], harness_requires: list[str]
) -> dict[str, list[str]]:
    """Every need of the carried wheels and of harness, met by the wheels or ``installed``.

    Returns ``problems`` (a need nothing meets: the install would break at import),
    ``versions`` (met by a version outside the range asked: worth a look on the node) and
    ``notes`` (met differently on purpose, or by a version known only on the node).
    """
    from packaging.requirements import Requirement

    carried = {wheel_dist(w)[0]: wheel_dist(w)[1] for w in wheels.glob("*.whl")}
    have = {canonical(k): v for k, v in installed.items()} | carried
    env = node_environment()
    out: dict[str, list[str]] = {"problems": [], "versions": [], "notes": []}
    unknown: set[str] = set()
    needs = [(w.name, r) for w in sorted(wheels.glob("*.whl")) for r in wheel_requires(w)]
    needs += [("harness", r) for r in harness_requires]
    for who, text in needs:
        req = Requirement(text)
        if req.marker is not None and not req.marker.evaluate(env):
            continue
        name = canonical(req.name)
        if name in OWN_ON_NODE or (name in NOT_CARRIED and name not in have):
            why = OWN_ON_NODE.get(name) or NOT_CARRIED[name]
            out["notes"].append(f"{who} needs {text}: {why} ({have.get(name) or 'absent'})")
            continue
        if name not in have:
            out["problems"].append(f"{who} needs {text}: neither carried nor on the node")
        elif have[name] is None:
            unknown.add(name)
        elif req.specifier and not req.specifier.contains(have[name], prereleases=True):
            out["versions"].append(f"{who} needs {text}: {req.name} is {have[name]}")
    if unknown:
        out["notes"].append(f"met by the node, versions read there: {', '.join(sorted(unknown))}")
    return out


def installed_here() -> dict[str, str | None]:
    """Every distribution this interpreter sees (on the node: its image plus the wheels)."""
    import importlib.metadata as md

    return {canonical(d.metadata["Name"]): d.version for d in md.distributions()}


def _project() -> dict:
    import tomllib

    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def harness_requires() -> list[str]:
    """harness's own dependencies, read from pyproject.toml (no install needed)."""
    return list(_project()["dependencies"])


def python_admitted(version: str = NODE_PYTHON) -> tuple[bool, str]:
    """Whether pyproject's ``requires-python`` admits ``version``, and the range."""
    from packaging.specifiers import SpecifierSet

    spec = _project()["requires-python"]
    return SpecifierSet(spec).contains(version), spec
