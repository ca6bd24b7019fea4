"""`python -m harness --help` explains the command line; Hydra's bash completion completes it.

The expected descriptions are read here from the config files' header comments, independently
of harness/config/help.py, so the test also holds the files to their header convention.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.config.schema import RunConfig
from harness.paths import CONF_DIR, PROJECT_ROOT
from tests.conftest import offline_env, run_harness

GROUPS = ["model", "strategy", "tier", "dataset", "tracking"]
HEAVY_MODULES = ["torch", "lm_eval", "transformers", "datasets", "mlflow", "vllm", "ray"]
HARNESS_SCRIPT = Path(sys.executable).parent / "harness"


def header_description(path: Path) -> str:
    """The comment line under the usage line `# python -m harness ...` that starts a file."""
    lines = path.read_text().splitlines()
    if lines and lines[0].startswith("# @package"):
        lines = lines[1:]
    assert len(lines) > 1 and lines[0].startswith("# python -m harness"), f"{path}: no usage line"
    assert lines[1].startswith("# "), f"{path}: no description under the usage line"
    return lines[1].removeprefix("# ").strip()


def squash(text: str) -> str:
    """Whitespace collapsed, so that wrapped lines and column padding do not matter."""
    return " ".join(text.split())


@pytest.fixture(scope="module")
def help_page(tmp_path_factory) -> str:
    cwd = tmp_path_factory.mktemp("help")
    proc = run_harness(["--help"], cwd, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert not (cwd / "outputs").exists(), "--help must not create output folders"
    return proc.stdout


@pytest.mark.parametrize("group", GROUPS)
def test_every_option_of_every_group_appears_with_its_description(help_page, group):
    assert re.search(rf"^{group}: \S", help_page, re.M), f"group {group} missing"
    paths = sorted((CONF_DIR / group).glob("*.yaml"))
    assert paths
    page = squash(help_page)
    for path in paths:
        description = header_description(path)
        assert not description.startswith(("Figures:", "python -m")), f"{path}: {description}"
        assert description.endswith("."), f"{path}: description is not one full line"
        assert f" {path.stem} {squash(description)}" in page, f"{path.stem}: {description}"


def test_help_is_ours_not_hydras_generic_page(help_page):
    assert "powered by Hydra" not in help_page
    assert "== Config groups ==" not in help_page  # Hydra's default template
    assert help_page.startswith("harness: ")
    for needle in ["--hydra-help", "--cfg job", "harness -sc install=bash"]:
        assert needle in help_page


def test_help_lists_the_settings(help_page):
    page = squash(help_page)
    for field in dataclasses.fields(RunConfig):
        if field.name not in GROUPS:
            assert re.search(rf" {field.name}=\S+ [A-Z]", page), field.name
    for setting in ["plan_only=false", "offline=true", "rerun=false", "seed=null"]:
        assert f" {setting} " in page


def test_help_shows_the_engines_own_keywords_with_an_example(help_page):
    page = squash(help_page)
    settings = page.split("== Settings: key=value (default) ==")[1].split("== Examples ==")[0]
    assert " strategy.engine_args=null More keyword arguments for the engine" in settings, page
    example = "strategy.engine_args={max_num_seqs:256,enable_prefix_caching:true}"
    assert f"Example: {example}" in settings, page


def test_help_shows_the_five_readme_examples(help_page):
    readme = (PROJECT_ROOT / "README.md").read_text()
    top_block = readme.split("```")[1]
    examples = [
        line.split("#")[0].strip()
        for line in top_block.splitlines()
        if line.startswith("python -m harness")
    ]
    assert len(examples) == 5
    shown = [line.split("#")[0].strip() for line in help_page.splitlines()]
    for example in examples:
        assert example in shown, example


def test_help_follows_overrides_and_the_search_path(tmp_path):
    """-h works too; options from a hydra.searchpath folder appear; `$` survives the template."""
    mine = tmp_path / "myconf" / "dataset" / "mine.yaml"
    mine.parent.mkdir(parents=True)
    mine.write_text(
        "# @package dataset.mine\n"
        "# python -m harness dataset=[mine]\n"
        "# My own task, with data under $HOME/data and costs of ${cost}.\n"
        "task: arith_mc\n"
    )
    proc = run_harness(
        [f"hydra.searchpath=[file://{mine.parents[1]}]", "model=falcon_40b", "-h"], tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    page = squash(proc.stdout)
    assert " mine My own task, with data under $HOME/data and costs of ${cost}." in page
    assert "model=falcon_40b" in page.split("Chosen:")[1]


def test_help_imports_no_heavy_module(tmp_path):
    """Measures --help and checks it loads none of torch, lm-eval, MLflow (no tight time bound)."""
    code = (
        "import atexit, sys, time\n"
        "start = time.perf_counter()\n"
        f"heavy = {HEAVY_MODULES!r}\n"
        "atexit.register(lambda: print('HELP-CHECK', round(time.perf_counter() - start, 3),\n"
        "    ','.join(m for m in heavy if m in sys.modules), file=sys.stderr))\n"
        "sys.argv = ['harness', '--help']\n"
        "from harness.app import main\n"
        "main()\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=offline_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (report,) = [line for line in proc.stderr.splitlines() if line.startswith("HELP-CHECK")]
    _, seconds, *loaded = report.split(" ")
    print(f"--help in-process time: {seconds} s")
    assert loaded == [""], f"--help imported {loaded}"
    assert float(seconds) < 30


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_bash_completion_completes_group_options(tmp_path):
    """Hydra's installed bash function, driven as bash drives it, completes `model=fal`."""
    assert HARNESS_SCRIPT.is_file(), "pip install -e . installs the `harness` console script"
    env = offline_env(tmp_path)
    env["PATH"] = f"{HARNESS_SCRIPT.parent}{os.pathsep}{env.get('PATH', '')}"
    install = subprocess.run(
        ["harness", "-sc", "install=bash"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr[-3000:]
    assert "hydra_bash_completion()" in install.stdout
    assert install.stdout.rstrip().endswith("-F hydra_bash_completion harness")

    script = (
        'eval "$(harness -sc install=bash)"\n'
        "complete_line() {\n"
        '  COMP_LINE="$1"; COMP_POINT=${#COMP_LINE}; COMP_CWORD=$2; COMPREPLY=()\n'
        "  hydra_bash_completion\n"
        '  echo "$1 -> ${COMPREPLY[*]}"\n'
        "}\n"
        'complete_line "harness model=fal" 1\n'
        'complete_line "harness strategy=tp4 tier=x" 2\n'
    )
    proc = subprocess.run(
        ["bash", "-c", script],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    replies = dict(line.split(" -> ") for line in proc.stdout.splitlines())
    assert sorted(replies["harness model=fal"].split()) == ["model=falcon_180b", "model=falcon_40b"]
    assert replies["harness strategy=tp4 tier=x"].split() == ["tier=xlarge"]
    assert not (tmp_path / "outputs").exists(), "completion must not create output folders"
