"""Tests on a real NVIDIA GPU (marker ``gpu``; pyproject's addopts deselect them): on a GPU node,
``python -m pytest -m gpu tests/gpu`` (benchmarks/gpu_check.sh runs them so).

Each test asks for ``cuda()`` first: without a CUDA device it skips, saying why, except where
``HARNESS_REQUIRE_GPU=1`` (the GPU check sets it): there a missing GPU fails the test, so that a
check on a GPU node never counts a skip as a pass.
"""

from __future__ import annotations

import os

import pytest


def cuda() -> None:
    """Go on when torch sees a CUDA device; else skip, or fail where a GPU is required."""
    import torch

    if torch.cuda.is_available():
        return
    why = f"no CUDA device (torch {torch.__version__}, built for CUDA {torch.version.cuda})"
    if os.environ.get("HARNESS_REQUIRE_GPU") == "1":
        pytest.fail(f"a GPU is required here (HARNESS_REQUIRE_GPU=1) but there is {why}")
    pytest.skip(why)
