"""A stand-in for nvidia-ml-py's ``pynvml`` on machines without an NVIDIA GPU (tests only).

Put this folder first on PYTHONPATH and describe the node in FAKE_NVML_GPUS as
``<count>x<name>:<MiB>``, e.g. ``4xNVIDIA H100 80GB HBM3:81559``; unset, there is no driver.
Only the calls harness makes are here.
"""

from __future__ import annotations

import os
from types import SimpleNamespace


class NVMLError(Exception):
    pass


class NVMLError_LibraryNotFound(NVMLError):
    pass


def _gpus() -> list[tuple[str, int]]:
    spec = os.environ.get("FAKE_NVML_GPUS")
    if not spec:
        raise NVMLError_LibraryNotFound("NVML Shared Library Not Found")
    count, _, rest = spec.partition("x")
    name, _, mib = rest.rpartition(":")
    return [(name, int(mib) * 1024**2)] * int(count)


def nvmlInit() -> None:
    _gpus()


def nvmlShutdown() -> None:
    pass


def nvmlDeviceGetCount() -> int:
    return len(_gpus())


def nvmlDeviceGetHandleByIndex(index: int) -> int:
    return index


def nvmlDeviceGetName(handle: int) -> str:
    return _gpus()[handle][0]


def nvmlDeviceGetMemoryInfo(handle: int) -> SimpleNamespace:
    total = _gpus()[handle][1]
    return SimpleNamespace(total=total, used=0, free=total)
