"""The fake NVML (tests/fake_nvml) as ``pynvml`` in this process, for the telemetry tests."""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest

from tests.conftest import FAKE_NVML as FAKE_NVML_DIR

FAKE_NVML = FAKE_NVML_DIR / "pynvml.py"


@pytest.fixture
def fake_nvml(monkeypatch, tmp_path):
    """The fake NVML as ``pynvml`` in this process; returns a function that scripts the node."""
    spec = importlib.util.spec_from_file_location("pynvml", FAKE_NVML)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setitem(sys.modules, "pynvml", module)

    def script(node: dict) -> None:
        path = tmp_path / f"nvml_{len(list(tmp_path.glob('nvml_*')))}.json"
        path.write_text(json.dumps(node))
        monkeypatch.setenv("FAKE_NVML_SCRIPT", str(path))

    return script
