"""What GPUs this node really has, read through NVML; none when there is no NVIDIA driver."""

from __future__ import annotations

import logging
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass
class Gpu:
    """One GPU as NVML reports it."""

    index: int
    name: str
    memory_gib: float


def detect_gpus() -> list[Gpu]:
    """The node's NVIDIA GPUs; an empty list when NVML is missing or finds no driver."""
    try:
        import pynvml
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as err:
        log.debug("NVML unavailable: %s", err)
        return []
    try:
        gpus = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            name = pynvml.nvmlDeviceGetName(handle)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle).total
            gpus.append(Gpu(i, name if isinstance(name, str) else name.decode(), memory / 1024**3))
        return gpus
    finally:
        pynvml.nvmlShutdown()


def hardware_problems(device: str, gpus_on_this_node: int, detected: list[Gpu]) -> list[str]:
    """A GPU plan this node cannot run: fewer GPUs than the plan puts on it."""
    if device != "cuda" or gpus_on_this_node <= len(detected):
        return []
    seen = ", ".join(g.name for g in detected) or "none"
    return [
        f"the plan puts {gpus_on_this_node} GPU(s) on this node, but NVML sees {len(detected)} "
        f"({seen}). Fix: run on a node with enough GPUs (SLURM: hydra/launcher=slurm with this "
        "tier), a smaller strategy, or tier=local for the CPU."
    ]
