"""A stand-in for nvidia-ml-py's ``pynvml`` on machines without an NVIDIA GPU (tests only).

Put this folder first on PYTHONPATH (or this module in ``sys.modules["pynvml"]``) and describe the
node in one of two ways; with neither there is no driver:

- FAKE_NVML_GPUS as ``<count>x<name>:<MiB>``, e.g. ``4xNVIDIA H100 80GB HBM3:81559``: idle GPUs.
- FAKE_NVML_SCRIPT, a JSON file scripting each GPU's readings sample by sample::

    {"gpus": [{"name": "NVIDIA H100 80GB HBM3", "total_mib": 81559, "used_mib": [0, 500, 900],
               "util": [0, 50], "power_w": [70, 300], "temp_c": [30], "energy_j": [0, 10]}],
     "fail_at": 4, "nvlink": [[0, 1]]}

  The n-th reading of a quantity on a GPU is the n-th list item (the last one once the list runs
  out). ``energy_j`` null: the GPU has no energy counter (NOT_SUPPORTED), as on older GPUs.
  ``fail_at``: the memory read number ``fail_at`` of GPU 0 raises "GPU is lost". ``nvlink``: the
  GPU pairs joined by NVLink (the rest meet at the host bridge over PCIe).

Only the calls harness makes are here.
"""

from __future__ import annotations

import functools
import json
import os
from collections import Counter
from types import SimpleNamespace
from typing import Any

NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_GPU_IS_LOST = 15
NVML_TEMPERATURE_GPU = 0
NVML_P2P_CAPS_INDEX_NVLINK = 2
NVML_P2P_STATUS_OK = 0
NVML_P2P_STATUS_NOT_SUPPORTED = 5
NVML_TOPOLOGY_HOSTBRIDGE = 30


class NVMLError(Exception):
    def __init__(self, value: int = 999, text: str = "Unknown Error") -> None:
        super().__init__(text)
        self.value = value


class NVMLError_LibraryNotFound(NVMLError):
    def __init__(self) -> None:
        super().__init__(12, "NVML Shared Library Not Found")


class NVMLError_NotSupported(NVMLError):
    def __init__(self) -> None:
        super().__init__(NVML_ERROR_NOT_SUPPORTED, "Not Supported")


_reads: Counter[tuple[str, int]] = Counter()


@functools.cache
def _load(path: str) -> dict[str, Any]:
    with open(path) as f:
        return json.load(f)


def _script() -> dict[str, Any] | None:
    path = os.environ.get("FAKE_NVML_SCRIPT")
    return _load(path) if path else None


def _gpus() -> list[dict[str, Any]]:
    script = _script()
    if script is not None:
        return script["gpus"]
    spec = os.environ.get("FAKE_NVML_GPUS")
    if not spec:
        raise NVMLError_LibraryNotFound()
    count, _, rest = spec.partition("x")
    name, _, mib = rest.rpartition(":")
    return [{"name": name, "total_mib": int(mib)}] * int(count)


def _next(handle: int, quantity: str, default: Any = 0) -> Any:
    """The next scripted reading of ``quantity`` on GPU ``handle``."""
    values = _gpus()[handle].get(quantity, [default])
    if values is None:
        raise NVMLError_NotSupported()
    n = _reads[(quantity, handle)]
    _reads[(quantity, handle)] += 1
    return values[min(n, len(values) - 1)]


def nvmlInit() -> None:
    _gpus()
    _reads.clear()


def nvmlShutdown() -> None:
    pass


def nvmlDeviceGetCount() -> int:
    return len(_gpus())


def nvmlDeviceGetHandleByIndex(index: int) -> int:
    return index


def nvmlDeviceGetName(handle: int) -> str:
    return str(_gpus()[handle]["name"])


def nvmlDeviceGetUUID(handle: int) -> str:
    return f"GPU-fake-{handle}"


class _Memory:
    """``nvmlMemory_t``; reading ``used`` is what takes the next scripted reading."""

    def __init__(self, handle: int) -> None:
        self.handle = handle
        self.total = _gpus()[handle]["total_mib"] * 1024**2

    @property
    def used(self) -> int:
        fail_at = (_script() or {}).get("fail_at")
        if self.handle == 0 and fail_at is not None and _reads[("used_mib", 0)] >= fail_at:
            raise NVMLError(NVML_ERROR_GPU_IS_LOST, "GPU is lost")
        return int(_next(self.handle, "used_mib") * 1024**2)

    @property
    def free(self) -> int:
        return self.total - self.used


def nvmlDeviceGetMemoryInfo(handle: int) -> _Memory:
    return _Memory(handle)


def nvmlDeviceGetUtilizationRates(handle: int) -> SimpleNamespace:
    return SimpleNamespace(gpu=_next(handle, "util"), memory=0)


def nvmlDeviceGetPowerUsage(handle: int) -> int:
    return int(_next(handle, "power_w") * 1000)  # milliwatts


def nvmlDeviceGetTemperature(handle: int, sensor: int) -> int:
    return int(_next(handle, "temp_c", 30))


def nvmlDeviceGetTotalEnergyConsumption(handle: int) -> int:
    return int(_next(handle, "energy_j") * 1000)  # millijoules since the driver loaded


def nvmlDeviceGetP2PStatus(a: int, b: int, index: int) -> int:
    pairs = {tuple(sorted(p)) for p in (_script() or {}).get("nvlink", [])}
    linked = index == NVML_P2P_CAPS_INDEX_NVLINK and tuple(sorted((a, b))) in pairs
    return NVML_P2P_STATUS_OK if linked else NVML_P2P_STATUS_NOT_SUPPORTED


def nvmlDeviceGetTopologyCommonAncestor(a: int, b: int) -> int:
    return NVML_TOPOLOGY_HOSTBRIDGE


def nvmlSystemGetDriverVersion() -> str:
    return "999.99"


def nvmlSystemGetCudaDriverVersion() -> int:
    return 13000
