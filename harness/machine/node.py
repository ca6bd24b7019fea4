"""What this node really has: GPUs through NVML, CPUs and memory from the OS, or SLURM's allocation.

``tier=local`` is this node, measured when a run or a plan needs it (``${machine:<field>}`` in
conf/tier/local.yaml), so the same command plans for the CPU box it runs on and for an 8-GPU node.
Reading it costs about 0.05 s (NVML's import and init); it is done once per process.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.machine.nvml import Gpu, import_nvml, list_gpus, pcie_only_pairs, topology

log = logging.getLogger(__name__)

GIB = 1024**3
_GPU_FAMILY = re.compile(
    r"\b(GB200|GH200|B200|B100|H200|H100|H800|H20|A100|A800|A10G|A10|A30|A40|L40S|L40|L4|V100|T4)\b"
)


@dataclass
class Node:
    """This node's resources, as a job here may use them."""

    gpus: list[Gpu]
    cpus: int
    host_memory_gib: float
    nodes: int
    sources: list[str] = field(default_factory=list)
    """Where each figure came from (NVML, the OS, a SLURM variable)."""

    def tier_values(self) -> dict[str, Any]:
        """The TierConfig fields this node decides."""
        return {
            "gpus_per_node": len(self.gpus),
            "gpu_memory_gib": round(min((g.memory_gib for g in self.gpus), default=0.0), 2),
            "gpu_type": gpu_type(self.gpus[0].name) if self.gpus else None,
            "host_memory_gib": round(self.host_memory_gib, 2),
            "cpus_per_task": self.cpus,
            "nodes": self.nodes,
        }

    def describe(self) -> str:
        gpus = (
            f"{len(self.gpus)} x {self.gpus[0].name} ({self.gpus[0].memory_gib:.1f} GiB)"
            if self.gpus
            else "no GPU"
        )
        return (
            f"tier local is this node: {gpus}, {self.cpus} CPUs, {self.host_memory_gib:.1f} GiB "
            f"host memory, {self.nodes} node(s) ({'; '.join(self.sources)})"
        )


def gpu_type(name: str) -> str | None:
    """The GPU family in an NVML name: ``NVIDIA H100 80GB HBM3`` -> ``H100``."""
    match = _GPU_FAMILY.search(name.upper())
    return match.group(1) if match else None


def detect_gpus() -> list[Gpu]:
    """The node's NVIDIA GPUs; an empty list when NVML is missing or finds no driver."""
    nvml, why = import_nvml()
    if nvml is None:
        log.debug("no GPUs: %s", why)
        return []
    try:
        return list_gpus(nvml)
    finally:
        nvml.nvmlShutdown()


def cuda_visible() -> list[str] | None:
    """CUDA_VISIBLE_DEVICES's entries (indices, UUIDs or MIG names); None where it is unset."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    return None if visible is None else [v.strip() for v in visible.split(",") if v.strip()]


def _visible(gpus: list[Gpu]) -> tuple[list[Gpu], str]:
    """The GPUs a job here may use: SLURM's count, else CUDA_VISIBLE_DEVICES, else all."""
    source = f"GPUs: NVML ({len(gpus)})" if gpus else "GPUs: NVML finds none"
    wanted = cuda_visible()
    if wanted is not None:
        visible = os.environ["CUDA_VISIBLE_DEVICES"]
        if all(v.isdigit() for v in wanted):
            gpus = [g for g in gpus if str(g.index) in wanted]
        else:  # GPU UUIDs or MIG names: as many as listed
            gpus = gpus[: len(wanted)]
        source += f", CUDA_VISIBLE_DEVICES={visible!r}"
    on_node = os.environ.get("SLURM_GPUS_ON_NODE", "")
    if on_node.isdigit():
        gpus = gpus[: int(on_node)]
        source += f", SLURM_GPUS_ON_NODE={on_node}"
    return gpus, source


def _cpus() -> tuple[int, str]:
    on_node = os.environ.get("SLURM_CPUS_ON_NODE", "")
    if on_node.isdigit():
        return int(on_node), "CPUs: SLURM_CPUS_ON_NODE"
    return len(os.sched_getaffinity(0)), "CPUs: this process's affinity"


JOB_MEMORY_VAR = "HARNESS_JOB_MEMORY_GIB"
"""The host memory a local sweep gave this job (``harness.sweep.packing``), as SLURM's
``SLURM_MEM_PER_NODE`` gives a SLURM job its own: the job plans within it."""


def _memory_gib(cpus: int) -> tuple[float, str]:
    granted = os.environ.get(JOB_MEMORY_VAR, "")
    with contextlib.suppress(ValueError):
        if float(granted) > 0:
            return float(granted), f"memory: the local sweep's share ({JOB_MEMORY_VAR})"
    per_node = os.environ.get("SLURM_MEM_PER_NODE", "")
    if per_node.isdigit():
        return int(per_node) / 1024, "memory: SLURM_MEM_PER_NODE"
    per_cpu = os.environ.get("SLURM_MEM_PER_CPU", "")
    if per_cpu.isdigit():
        return int(per_cpu) * cpus / 1024, "memory: SLURM_MEM_PER_CPU x CPUs"
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB
    source = "memory: the OS"
    try:  # a container's limit (cgroup v2) is what the job may really use
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit.isdigit() and int(limit) / GIB < total:
            total, source = int(limit) / GIB, "memory: cgroup memory.max"
    except OSError:
        pass
    return total, source


def visible_gpu_ids(gpus: list[Gpu]) -> list[str]:
    """How CUDA_VISIBLE_DEVICES names each GPU this process may use (``_visible``'s GPUs, already
    narrowed by it): the variable's own entries where they are UUIDs or MIG names, else NVML's
    indices."""
    wanted = cuda_visible()
    if wanted is not None and not all(v.isdigit() for v in wanted):
        return wanted[: len(gpus)]
    return [str(g.index) for g in gpus]


def given_resources() -> dict[str, Any]:
    """What this process was given to run on: its host, GPUs (CUDA_VISIBLE_DEVICES; None where
    unset, every GPU of the node), CPU cores (its affinity) and host memory (``this_node``'s)."""
    import socket

    return {
        "host": socket.gethostname(),
        "gpus": cuda_visible(),
        "cpus": sorted(os.sched_getaffinity(0)),
        "host_memory_gib": round(this_node().host_memory_gib, 2),
    }


@functools.cache
def this_node() -> Node:
    """This node's GPUs, CPUs and memory (SLURM's allocation inside a job), read once."""
    gpus, gpu_source = _visible(detect_gpus())
    cpus, cpu_source = _cpus()
    memory, memory_source = _memory_gib(cpus)
    nodes = os.environ.get("SLURM_JOB_NUM_NODES", os.environ.get("SLURM_NNODES", ""))
    return Node(
        gpus=gpus,
        cpus=cpus,
        host_memory_gib=memory,
        nodes=int(nodes) if nodes.isdigit() else 1,
        sources=[gpu_source, cpu_source, memory_source],
    )


def tier_value(key: str) -> Any:
    """One field of the detected tier (the ``${machine:<field>}`` resolver)."""
    values = this_node().tier_values()
    if key not in values:
        raise KeyError(f"${{machine:{key}}}: no such field; one of {', '.join(values)}")
    return values[key]


def hardware_problems(device: str, gpus_on_this_node: int, detected: list[Gpu]) -> list[str]:
    """A GPU plan this node cannot run: fewer GPUs than the plan puts on it."""
    if device != "cuda" or gpus_on_this_node <= len(detected):
        return []
    seen = ", ".join(g.name for g in detected) or "none"
    return [
        f"the plan puts {gpus_on_this_node} GPU(s) on this node, but NVML sees {len(detected)} "
        f"({seen}). Fix: run on a node with enough GPUs (SLURM: hydra/launcher=slurm with this "
        "tier), a smaller strategy, or strategy=single on this machine (tier=local)."
    ]


def tensor_parallel_link_note(tp: int) -> str | None:
    """A warning when the first ``tp`` GPUs this job sees are not all joined by NVLink (their
    all-reduce then goes over PCIe); None when they are, or when NVML cannot say."""
    nvml, why = import_nvml()
    if nvml is None:
        log.debug("no NVLink check: %s", why)
        return None
    try:
        slow = pcie_only_pairs(topology(nvml, list_gpus(nvml)), tp)
    except Exception as err:  # a check, never a reason to stop the run
        log.debug("no NVLink check: %s", err)
        return None
    finally:
        with contextlib.suppress(Exception):  # already shut down
            nvml.nvmlShutdown()
    if not slow:
        return None
    return (
        f"the tensor-parallel group of {tp} GPUs spans GPU pairs without NVLink: "
        f"{', '.join(slow)}; all-reduce goes over PCIe there (slower). Fix: "
        "CUDA_VISIBLE_DEVICES with NVLink-joined GPUs, if this node has them."
    )
