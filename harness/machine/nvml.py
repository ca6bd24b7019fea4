"""Reading the node's NVIDIA GPUs through NVML (``nvidia-ml-py``): devices, readings, topology.

A quantity a device does not support (the energy counter before Volta, power on some boards) is
read as None from then on; any other NVML error is raised to the caller (the sampler), which
stops sampling and says why.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

MIB = 1024**2
NOT_SUPPORTED = 3
"""``NVML_ERROR_NOT_SUPPORTED``."""
_PCIE_PATHS = {0: "SAME", 10: "PIX", 20: "PXB", 30: "PHB", 40: "NODE", 50: "SYS"}
"""NVML's topology levels by the names ``nvidia-smi topo -m`` prints for them."""


@dataclass
class Gpu:
    """One GPU of the node, as NVML lists it (the node's facts and telemetry share this record)."""

    index: int
    """NVML's index (all GPUs of the node, whatever CUDA_VISIBLE_DEVICES says)."""
    name: str
    """Product name, e.g. ``NVIDIA H100 80GB HBM3``."""
    uuid: str
    """NVML's UUID of the device."""
    memory_total_mib: float
    """Device memory."""

    @property
    def memory_gib(self) -> float:
        return self.memory_total_mib / 1024


@dataclass
class Sample:
    """One reading of one GPU."""

    t: float
    """Wall-clock time of the reading (seconds since the epoch)."""
    gpu: int
    """NVML index of the GPU."""
    memory_used_mib: float
    """Device memory in use (by every process)."""
    utilization_pct: float | None
    """Percent of the last sample period in which a kernel ran."""
    power_w: float | None
    """Board power draw; None where not supported."""
    temperature_c: float | None
    """GPU core temperature; None where not supported."""
    energy_j: float | None
    """The energy counter (joules since the driver loaded); None where the GPU has none."""


@dataclass
class Link:
    """How two GPUs of the node reach each other."""

    a: int
    """NVML index of one GPU."""
    b: int
    """NVML index of the other."""
    link: str
    """``NVLink`` or ``PCIe``."""
    path: str
    """For PCIe, the closest common ancestor as ``nvidia-smi topo -m`` names it (PIX, PXB, PHB,
    NODE, SYS); ``NV`` for NVLink."""


NVML_LIBRARY = "libnvidia-ml.so.1"
"""The driver's NVML library, by the name nvidia-ml-py opens it on Linux."""


def _bindings_without_driver() -> bool:
    """Whether the installed nvidia-ml-py would only find that this node has no NVIDIA driver.

    Importing ``pynvml`` takes 10 ms (its thousands of ctypes declarations): a third of what
    plan-only with ``tier=local`` may add to lm-eval's own start-up (benchmarks/RESULTS.md,
    "Plan-only latency"). Its ``nvmlInit`` then fails at once where the driver's library cannot
    be opened, so that is tried first, on Linux, and only for the ``pynvml`` that site-packages
    holds: any other (one already imported, one put first on the path) is imported and asked.
    """
    import importlib.util
    import site
    import sys

    if not sys.platform.startswith("linux") or "pynvml" in sys.modules:
        return False
    spec = importlib.util.find_spec("pynvml")
    if spec is None or spec.origin is None:
        return False  # no bindings: the import says so
    installed = {os.path.realpath(p) for p in (*site.getsitepackages(), site.getusersitepackages())}
    if os.path.realpath(os.path.dirname(spec.origin)) not in installed:
        return False
    import ctypes

    try:
        ctypes.CDLL(NVML_LIBRARY)
    except OSError:
        return True
    return False


def import_nvml() -> tuple[Any, str | None]:
    """``pynvml`` initialised, or None and why not (no package, no driver, no GPU)."""
    if _bindings_without_driver():
        # The words of pynvml's own NVMLError_LibraryNotFound, which the import would have led to.
        return None, "NVML finds no driver (NVML Shared Library Not Found)"
    try:
        import pynvml
    except ImportError:
        return None, "nvidia-ml-py is not installed"
    try:
        pynvml.nvmlInit()
        count = pynvml.nvmlDeviceGetCount()
    except pynvml.NVMLError as err:
        return None, f"NVML finds no driver ({err})"
    if count == 0:
        pynvml.nvmlShutdown()
        return None, "NVML finds no GPU"
    return pynvml, None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def list_gpus(nvml: Any) -> list[Gpu]:
    """Every GPU of the node."""
    gpus = []
    for i in range(nvml.nvmlDeviceGetCount()):
        handle = nvml.nvmlDeviceGetHandleByIndex(i)
        gpus.append(
            Gpu(
                index=i,
                name=_text(nvml.nvmlDeviceGetName(handle)),
                uuid=_text(nvml.nvmlDeviceGetUUID(handle)),
                memory_total_mib=nvml.nvmlDeviceGetMemoryInfo(handle).total / MIB,
            )
        )
    return gpus


def topology(nvml: Any, gpus: list[Gpu]) -> list[Link]:
    """Every pair of GPUs: NVLink when NVML's P2P status says so, else PCIe with its path."""
    handles = [nvml.nvmlDeviceGetHandleByIndex(g.index) for g in gpus]
    links = []
    for i, a in enumerate(gpus):
        for j in range(i + 1, len(gpus)):
            b = gpus[j]
            try:
                status = nvml.nvmlDeviceGetP2PStatus(
                    handles[i], handles[j], nvml.NVML_P2P_CAPS_INDEX_NVLINK
                )
                if status == nvml.NVML_P2P_STATUS_OK:
                    links.append(Link(a.index, b.index, "NVLink", "NV"))
                    continue
                level = nvml.nvmlDeviceGetTopologyCommonAncestor(handles[i], handles[j])
                links.append(Link(a.index, b.index, "PCIe", _PCIE_PATHS.get(level, str(level))))
            except nvml.NVMLError as err:
                log.info("NVML topology of GPUs %d and %d unknown: %s", a.index, b.index, err)
                links.append(Link(a.index, b.index, "unknown", "?"))
    return links


def pcie_only_pairs(links: Sequence[Link], tp: int) -> list[str]:
    """Pairs of the first ``tp`` GPUs this job sees that no NVLink joins (``0-2 (PHB)``)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    wanted = [v.strip() for v in visible.split(",") if v.strip()]
    if wanted and all(v.isdigit() for v in wanted):
        group = [int(v) for v in wanted[:tp]]
    else:  # unset, or UUIDs: the first tp GPUs (NVML's order)
        group = list(range(tp))
    return [
        f"{x.a}-{x.b} ({x.path})"
        for x in links
        if x.a in group and x.b in group and x.link != "NVLink"
    ]


_OPTIONAL: dict[str, Callable[[Any, Any], float]] = {
    "utilization": lambda nvml, h: nvml.nvmlDeviceGetUtilizationRates(h).gpu,
    "power": lambda nvml, h: nvml.nvmlDeviceGetPowerUsage(h) / 1000,  # milliwatts
    "temperature": lambda nvml, h: nvml.nvmlDeviceGetTemperature(h, nvml.NVML_TEMPERATURE_GPU),
    "energy": lambda nvml, h: nvml.nvmlDeviceGetTotalEnergyConsumption(h) / 1000,  # millijoules
}
"""The readings a device may not support, in ``Sample``'s order."""


class Reader:
    """Reads every GPU once per call; remembers which quantities a device does not support."""

    def __init__(self, nvml: Any, gpus: list[Gpu]) -> None:
        self.nvml = nvml
        self.gpus = gpus
        self.handles = [nvml.nvmlDeviceGetHandleByIndex(g.index) for g in gpus]
        self.unsupported: set[tuple[int, str]] = set()
        """(GPU index, quantity) pairs NVML answered NOT_SUPPORTED for."""

    def _optional(self, gpu: int, quantity: str, handle: Any) -> float | None:
        if (gpu, quantity) in self.unsupported:
            return None
        try:
            return float(_OPTIONAL[quantity](self.nvml, handle))
        except self.nvml.NVMLError as err:
            if getattr(err, "value", None) != NOT_SUPPORTED:
                raise
            self.unsupported.add((gpu, quantity))
            log.info("GPU %d has no %s reading (NVML: not supported)", gpu, quantity)
            return None

    def read(self, clock: Callable[[], float]) -> list[Sample]:
        """One sample of every GPU; raises ``NVMLError`` on anything but NOT_SUPPORTED."""
        out = []
        t = clock()  # one time for the tick: a phase boundary holds every GPU's reading
        for gpu, handle in zip(self.gpus, self.handles, strict=True):
            memory = self.nvml.nvmlDeviceGetMemoryInfo(handle).used / MIB
            util, power, temp, energy = (self._optional(gpu.index, q, handle) for q in _OPTIONAL)
            out.append(Sample(t, gpu.index, memory, util, power, temp, energy))
        return out

    def has_energy_counter(self, gpu: int) -> bool:
        return (gpu, "energy") not in self.unsupported
