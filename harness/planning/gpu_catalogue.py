"""The memory a GPU really offers: what CUDA (and so vLLM) sees, not the "80 GB" of the datasheet.

vLLM's budget is ``total x gpu_memory_utilization`` where ``total`` is what CUDA reports
(``cudaMemGetInfo``), a little below NVML's figure (the driver keeps some) and below the
datasheet's. A tier that writes the datasheet's figure (``gpu_memory_gib: 80`` for an H100) plans
with the usable figure of this catalogue; a figure NVML measured on this node (``tier=local``)
wins, mapped to CUDA's when the catalogue knows both for that GPU; any other figure is taken as
written. Only GPUs with a public source are listed: a guess here would be a silent error.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.config.schema import TierConfig

MIB = 1024**2
GIB = 1024**3


@dataclass(frozen=True)
class GpuMemory:
    """The memory figures of one GPU type."""

    gpu_type: str
    """The family as tiers and NVML name it (``H100``; harness.machine.node.gpu_type)."""
    nominal_gib: float
    """The datasheet's size as tiers write it (``80`` for an H100 80GB)."""
    usable_gib: float
    """What CUDA reports as the device's total (vLLM's ``total_memory``): its budget's base."""
    nvml_gib: float | None
    """What NVML reports as the device's total, where a public source gives it."""
    source: str
    """Where the figures come from."""


CATALOGUE: tuple[GpuMemory, ...] = (
    GpuMemory(
        "H100",
        80.0,
        79.19,
        81559 / 1024,
        "usable: vLLM 0.19.0's start-up log on an H100 80GB HBM3 (`total_memory=79.19GiB`, "
        "llm-d-incubation/llm-d-planner accuracy/results/v0.19.0/logs); NVML: nvidia-smi's "
        "81559MiB on the same GPU type (vllm-project/vllm#55169)",
    ),
    GpuMemory(
        "H200",
        141.0,
        139.72,
        None,
        "usable: vLLM's start-up check on an H200 (`Free memory on device (7.34/139.72 GiB)`, "
        "vllm-project/vllm#23192)",
    ),
)
"""Every GPU type with a sourced usable figure."""

CLOSE_GIB = 0.05
"""How near a tier's figure must be to a catalogued one to be read as that figure."""


def catalogued(gpu_type: str | None, gib: float) -> GpuMemory | None:
    """The catalogue's entry for this GPU type whose datasheet or NVML figure ``gib`` is."""
    family = (gpu_type or "").upper()
    for entry in CATALOGUE:
        if entry.gpu_type != family:
            continue
        if abs(gib - entry.nominal_gib) < CLOSE_GIB:
            return entry
        if entry.nvml_gib is not None and abs(gib - entry.nvml_gib) < CLOSE_GIB:
            return entry
    return None


def usable_gpu_gib(tier: TierConfig) -> tuple[float, str | None]:
    """The GPU memory vLLM's budget starts from, and a note when it is not the tier's figure."""
    entry = catalogued(tier.gpu_type, tier.gpu_memory_gib)
    if entry is None or entry.usable_gib == tier.gpu_memory_gib:
        return tier.gpu_memory_gib, None
    read_as = "NVML's figure" if tier.detected else "the datasheet's figure"
    return entry.usable_gib, (
        f"GPU memory: {tier.gpu_memory_gib:.2f} GiB ({read_as}) of a {entry.gpu_type} is "
        f"{entry.usable_gib:.2f} GiB usable as CUDA reports it (the budget's base; sources in "
        "harness/planning/gpu_catalogue.py). Set tier.gpu_memory_gib to plan with another figure."
    )
