"""benchmarks/gpu_check.sh, cheaply and without a GPU or network: it parses, it answers --help,
its wheel list is well formed, and its checks say what they should (in normal CI)."""

from __future__ import annotations

import ast
import subprocess
import zipfile
from pathlib import Path

import pytest

from harness.paths import PROJECT_ROOT

BENCH = PROJECT_ROOT / "benchmarks"
SCRIPT = BENCH / "gpu_check.sh"


@pytest.fixture
def wheels(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    import gpu_check_wheels

    return gpu_check_wheels


def test_the_script_parses_and_answers_help():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    done = subprocess.run(["bash", str(SCRIPT), "--help"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "--dry-run" in done.stdout and "--out" in done.stdout
    bad = subprocess.run(["bash", str(SCRIPT), "--nope"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown argument: --nope" in bad.stderr


def test_the_header_names_the_carried_folder_and_git_ignores_it(wheels):
    folder = wheels.WHEELS_DIR.relative_to(PROJECT_ROOT)
    assert f'carry:     ["{folder}"]' in SCRIPT.read_text()
    probe = f"{folder}/x-1.0-py3-none-any.whl"
    ignored = subprocess.run(["git", "check-ignore", "-q", probe], cwd=PROJECT_ROOT)
    assert ignored.returncode == 0, f"{folder}/ is not gitignored: wheels would be committed"


def test_the_wheel_list_pins_what_harness_pins_and_carries_no_heavy_part(wheels):
    pins = {wheels.canonical(p.name): p for p in wheels.read_pins()}
    assert {"hydra-core", "omegaconf", "antlr4-python3-runtime", "lm-eval", "datasets"} <= set(pins)
    assert not {"torch", "transformers", "mlflow", "vllm", "ray"} & set(pins)
    for text in wheels.harness_requires():
        name, _, version = text.partition("==")
        key = wheels.canonical(name.split("[")[0])
        if key in pins:
            assert pins[key].version == version, f"gpu_wheels.txt pins {key} off pyproject's"
    assert pins["antlr4-python3-runtime"].sdist  # PyPI has no wheel of it


def test_requires_python_admits_both_supported_pythons(wheels):
    assert wheels.python_admitted("3.11.7")[0]
    assert wheels.python_admitted("3.12.3")[0]
    assert not wheels.python_admitted("3.13.0")[0]


def _wheel(folder: Path, name: str, *requires: str) -> None:
    meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n"
    meta += "".join(f"Requires-Dist: {r}\n" for r in requires)
    with zipfile.ZipFile(folder / f"{name}-1.0-py3-none-any.whl", "w") as z:
        z.writestr(f"{name}-1.0.dist-info/METADATA", meta)


def test_closure_finds_unmet_and_off_range_needs(wheels, tmp_path):
    _wheel(tmp_path, "carried_a", "carried-b", "numpy>=99", "nowhere", "x; python_version<'3.8'")
    _wheel(tmp_path, "carried_b", "pyarrow", "mlflow")
    found = wheels.closure(tmp_path, wheels.NODE_PACKAGES, ["torch==2.13.0"])
    assert found["problems"] == ["carried_a-1.0-py3-none-any.whl needs nowhere: neither carried "
                                 "nor on the node"]  # fmt: skip
    assert found["versions"] == ["carried_a-1.0-py3-none-any.whl needs numpy>=99: numpy is 2.5.2"]
    notes = "\n".join(found["notes"])
    assert "torch==2.13.0: the node's own build (2.11.0)" in notes
    assert "mlflow: tracking=none" in notes and "versions read there: pyarrow" in notes


def test_the_node_runs_the_fast_tests_it_can_import(monkeypatch, wheels, tmp_path):
    import gpu_check_gpu as gpu
    import gpu_check_steps as steps

    ctx = steps.Context(True, tmp_path, tmp_path, tmp_path, 0.0, False)
    keep, left = gpu.fast_test_files(ctx)
    assert "tests/gpu/test_gpu_check_script.py" in keep
    for path in left:
        assert gpu.imports_of(PROJECT_ROOT / path) & set(steps.NOT_ON_NODE), path


def test_every_other_test_here_is_marked_gpu():
    for path in sorted(Path(__file__).parent.glob("test_*.py")):
        if path.name == Path(__file__).name:
            continue
        tree = ast.parse(path.read_text())
        marks = [
            ast.unparse(n.value)
            for n in tree.body
            if isinstance(n, ast.Assign) and ast.unparse(n.targets[0]) == "pytestmark"
        ]
        assert marks == ["pytest.mark.gpu"], f"{path.name}: pytestmark {marks}"


def test_the_served_step_says_the_engines_memory_check_in_one_line(wheels):
    """Issue 37: the GPU node's in-process vLLM run records its start-up memory beside the
    plan's; the step's line says each figure compared and how many are off."""
    import gpu_check_served as served

    check = {
        "figures": {
            "kv_tokens": {"planned": 477372, "measured": 476016, "diff_pct": -0.28},
            "overhead_gib": {"planned": 2.0, "measured": 2.9, "diff_pct": 45.0},
            "cuda_graphs_gib": {"planned": None, "measured": 0.4, "status": "not planned"},
        },
        "warnings": ["memory check: overhead ..."],
    }
    line = served.memory_line(check)
    assert line == (
        "memory check (1 off): kv_tokens 477372 -> 476016 (-0.3%), overhead_gib 2 -> 2.9 (+45.0%)"
    )
    assert served.memory_line({}) == "memory check (0 off): nothing reported"
