"""Contract with vLLM: every keyword harness hands to ``vllm.LLM`` exists in ``EngineArgs``, with a
type that admits our value, in both supported releases (pyproject): the GPU build's wheel (fetched
with ``pip download --no-deps`` and cached; never installed: it pins a CUDA torch) and the CPU
build installed for the tests. ``vllm/engine/arg_utils.py`` is read with ``ast``, not imported.

Where a field's type names one of vLLM's ``Literal`` aliases (``QuantizationMethods``,
``CacheDType``, ``ModelDType``, ``DistributedExecutorBackend``), our string must be one of its
values, even where the annotation also admits any ``str``: vLLM checks those at build time.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import subprocess
import sys
import zipfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from harness.config.schema import Quantization
from harness.engines.inprocess.vllm import engine_kwargs
from harness.engines.vllm_support.install import CPU_DIST, GPU_DIST, SUPPORTED, installed_vllm
from harness.paths import PROJECT_ROOT
from harness.planning.auto import plan_run
from tests.planning.test_plan import run_config

CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "harness" / "wheels"
ARG_UTILS = "vllm/engine/arg_utils.py"
LM_EVAL_KEYS = [
    "model",
    "revision",
    "dtype",
    "tokenizer",
    "tokenizer_mode",
    "tokenizer_revision",
    "trust_remote_code",
    "tensor_parallel_size",
    "max_model_len",
    "max_num_seqs",
    "quantization",
    "seed",
    "enable_lora",
    "max_lora_rank",
]
"""What lm-eval 0.4.13's ``VLLM.__init__`` passes to ``LLM`` itself, besides ours."""


def deployments() -> dict[str, dict[str, Any]]:
    """Our keyword arguments for ``vllm.LLM`` (``pretrained`` is vLLM's ``model``) over plans that
    use every option: CPU tp2, GPU tp4 with fp8 weights and KV cache, int8, pp with Ray."""
    cases = {
        "cpu-tp2": ("tiny_char", "tp2", "local", {}),
        "gpu-tp4-fp8": ("llama3_1_70b", "tp4_fp8", "medium", {"kv_cache_dtype": "fp8"}),
        "gpu-int8": ("llama3_1_8b", "int8", "small", {"enforce_eager": True}),
        "gpu-tp4-pp2-ray": ("falcon_180b", "tp4_pp2", "xlarge", {}),
    }
    out = {}
    for name, (model, strategy, tier, extra) in cases.items():
        run = run_config(model, strategy, tier)
        run = replace(run, strategy=replace(run.strategy, **extra), seed=1234)
        run = replace(run, model=replace(run.model, revision="main"))
        plan = plan_run(run)
        assert plan.strategy_config is not None
        kwargs = engine_kwargs(plan)
        assert kwargs["seed"] == 1234  # the run's seed, read from the plan
        kwargs["model"] = kwargs.pop("pretrained")
        kwargs.pop("batch_size")  # lm-eval's own
        out[name] = kwargs
    return out


def literal_aliases(read: Callable[[str], str | None], names: list[str]) -> dict[str, set[Any]]:
    """Values of vLLM's ``Name = Literal[...]`` aliases, found in the release's own sources."""
    places = {
        "QuantizationMethods": "vllm/model_executor/layers/quantization/__init__.py",
        "CacheDType": "vllm/config/cache.py",
        "ModelDType": "vllm/config/model.py",
        "TokenizerMode": "vllm/config/model.py",
        "DistributedExecutorBackend": "vllm/config/parallel.py",
    }
    found: dict[str, set[Any]] = {}
    for name in names:
        source = read(places[name]) if name in places else None
        if source is None:
            continue
        for node in ast.parse(source).body:
            target = (
                node.targets[0] if isinstance(node, ast.Assign) else getattr(node, "target", None)
            )
            value = getattr(node, "value", None)
            if (
                isinstance(target, ast.Name)
                and target.id == name
                and isinstance(value, ast.Subscript)
            ):
                elements = value.slice.elts if isinstance(value.slice, ast.Tuple) else [value.slice]
                found[name] = {e.value for e in elements if isinstance(e, ast.Constant)}
    return found


def engine_args_fields(source: str) -> dict[str, str]:
    """``EngineArgs`` field -> its annotation, as source text."""
    for node in ast.parse(source).body:
        if isinstance(node, ast.ClassDef) and node.name == "EngineArgs":
            return {
                st.target.id: ast.unparse(st.annotation)
                for st in node.body
                if isinstance(st, ast.AnnAssign) and isinstance(st.target, ast.Name)
            }
    raise AssertionError("no class EngineArgs")


def admits(annotation: str, value: Any, aliases: dict[str, set[Any]]) -> bool:
    parts = {p.strip() for p in annotation.split("|")}
    literal = [aliases[p] for p in parts if p in aliases]
    if value is None:
        return "None" in parts
    if isinstance(value, bool):
        return "bool" in parts
    if isinstance(value, int):
        return bool(parts & {"int", "float"}) or any(value in v for v in literal)
    if isinstance(value, float):
        return "float" in parts
    if isinstance(value, str):
        if literal:  # the alias is the contract, even beside `| str`
            return any(value in v for v in literal)
        return "str" in parts
    return False


def check(read: Callable[[str], str | None], release: str) -> None:
    source = read(ARG_UTILS)
    assert source is not None, f"{release}: no {ARG_UTILS}"
    fields = engine_args_fields(source)
    alias_names = sorted({p.strip() for a in fields.values() for p in a.split("|")})
    aliases = literal_aliases(read, [n for n in alias_names if n[:1].isupper()])
    missing = [k for k in LM_EVAL_KEYS if k not in fields]
    assert not missing, f"{release}: EngineArgs lacks lm-eval's {missing}"
    problems = []
    for case, kwargs in deployments().items():
        for key, value in kwargs.items():
            if key not in fields:
                problems.append(f"{case}: {key} is not a field of EngineArgs")
            elif not admits(fields[key], value, aliases):
                problems.append(f"{case}: {key}={value!r} does not fit {fields[key]}")
    assert not problems, f"{release}:\n" + "\n".join(problems)


def gpu_wheel() -> Path:
    version = SUPPORTED[GPU_DIST]
    found = sorted(CACHE.glob(f"vllm-{version}-*.whl"))
    if found:
        return found[-1]
    CACHE.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", f"vllm=={version}", "--no-deps", "-q"]
    proc = subprocess.run([*cmd, "-d", str(CACHE)], capture_output=True, text=True, timeout=900)
    found = sorted(CACHE.glob(f"vllm-{version}-*.whl"))
    if not found:
        reason = f"cannot download vllm=={version}: {proc.stderr.strip()[-500:]}"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return found[-1]


def test_every_keyword_fits_the_gpu_release():
    with zipfile.ZipFile(gpu_wheel()) as wheel:
        names = set(wheel.namelist())

        def read(path: str) -> str | None:
            return wheel.read(path).decode() if path in names else None

        check(read, f"{GPU_DIST} {SUPPORTED[GPU_DIST]}")


USER_ENGINE_ARGS = (
    "max_num_seqs",
    "enable_prefix_caching",
    "max_num_batched_tokens",
    "tokenizer_mode",
)
"""``strategy.engine_args`` keys the README and tests use: the GPU release must take them too."""


def test_engine_args_checked_against_the_gpu_release():
    """``strategy.engine_args`` is checked against the installed vLLM's ``EngineArgs`` (read with
    the same ast reader, harness/config/engine_args.py); the GPU release's fields, read from its
    wheel, take the same keys, and a plan-owned one is refused whatever the release."""
    from harness.config.engine_args import engine_args_fields as fields_of
    from harness.config.rules import PLAN_OWNED

    with zipfile.ZipFile(gpu_wheel()) as wheel:
        gpu = fields_of(wheel.read(ARG_UTILS).decode())
    assert set(USER_ENGINE_ARGS) <= gpu, set(USER_ENGINE_ARGS) - gpu
    assert {"tensor_parallel_size", "max_model_len", "gpu_memory_utilization"} <= gpu
    assert {"tensor_parallel_size", "max_model_len"} <= set(PLAN_OWNED)


def test_quantization_names_are_vllm_methods_of_both_releases():
    """int8 and fp8 quantize at load time; int4 reads the method from the checkpoint."""
    from harness.engines.inprocess.vllm import QUANTIZATION

    assert QUANTIZATION[Quantization.int4] is None and QUANTIZATION[Quantization.none] is None
    assert {q for q in QUANTIZATION.values() if q} == {"fp8", "int8_per_channel_weight_only"}


@pytest.mark.vllm
def test_every_keyword_fits_the_installed_cpu_build():
    found = installed_vllm()
    if found is None or found[0] != CPU_DIST:
        reason = f"{CPU_DIST} is not installed here"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    assert found[1] == SUPPORTED[CPU_DIST]
    spec = importlib.util.find_spec("vllm")
    assert spec is not None and spec.origin is not None
    root = Path(spec.origin).parent.parent

    def read(path: str) -> str | None:
        file = root / path
        return file.read_text() if file.is_file() else None

    check(read, f"{CPU_DIST} {found[1]}")


def uv_compile(*extra: str) -> subprocess.CompletedProcess[str]:
    """Resolve the project with the ``vllm`` and ``ray`` extras for a Linux GPU host (Python
    3.11, manylinux x86_64) from PyPI's metadata: nothing is downloaded beyond it."""
    cmd = [sys.executable, "-m", "uv", "pip", "compile", str(PROJECT_ROOT / "pyproject.toml")]
    cmd += ["--extra", "vllm", "--extra", "ray", "--python-version", "3.11"]
    cmd += ["--python-platform", "x86_64-manylinux_2_28", "--no-header", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=PROJECT_ROOT)


def test_the_gpu_install_resolves_in_one_run():
    """The README's GPU host command: ``uv pip install -e ".[vllm,ray]" --override
    install/vllm-gpu-overrides.txt``; and why the override is needed."""
    pytest.importorskip("uv", reason="uv is in the test extra: pip install -e '.[test]'")
    overrides = PROJECT_ROOT / "install" / "vllm-gpu-overrides.txt"
    proc = uv_compile("--override", str(overrides))
    if proc.returncode != 0 and "No solution found" not in proc.stderr:
        reason = f"cannot reach the package index: {proc.stderr.strip()[-500:]}"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    assert proc.returncode == 0, proc.stderr[-3000:]
    pins = dict(
        line.split("==", 1) for line in proc.stdout.splitlines() if "==" in line and " " not in line
    )
    assert pins["vllm"] == SUPPORTED[GPU_DIST] and pins["torch"] == "2.14.0"
    assert (pins["transformers"], pins["lm-eval"], pins["ray"]) == ("5.19.0", "0.4.13", "2.60.0")
    plain = uv_compile()  # the project's CPU torch pin against vLLM's CUDA torch
    assert plain.returncode != 0 and "torch==2.14.0" in plain.stderr, plain.stderr[-2000:]
