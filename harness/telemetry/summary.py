"""Per-phase figures from recordings: per GPU peak and mean memory, mean utilization, energy and
duration; across GPUs the imbalance (max/min peak memory, max/min mean utilization).

A phase's readings are those taken from its start to its end, both included (the sampler reads
every GPU at each boundary). Energy is the difference of the energy counter's readings where the
GPU has one, else power integrated over time (trapezoids between readings).
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from dataclasses import asdict, dataclass
from itertools import pairwise
from typing import Any

from harness.machine.nvml import Sample
from harness.telemetry.sampler import Phase, Recording

GIB_PER_MIB = 1 / 1024


@dataclass
class GpuPhase:
    """One GPU during one phase."""

    gpu: str
    """The GPU's label: ``gpu0``, or ``<node>/gpu0`` when several nodes are recorded."""
    samples: int
    """Readings of the GPU within the phase."""
    peak_memory_gib: float
    """Most device memory in use at any reading."""
    mean_memory_gib: float
    """Mean device memory in use over the readings."""
    mean_utilization_pct: float | None
    """Mean utilization over the readings; None where NVML has none."""
    energy_j: float | None
    """Energy used in the phase; None where neither the counter nor power is readable."""
    energy_from: str | None
    """``counter`` (nvmlDeviceGetTotalEnergyConsumption) or ``power`` (integrated)."""


@dataclass
class PhaseSummary:
    """One phase across every GPU."""

    name: str
    """``load`` or the dataset's name."""
    duration_s: float
    """From the phase's start to its end."""
    gpus: list[GpuPhase]
    """Each GPU's figures."""
    energy_j: float | None
    """Energy of every GPU together; None when any GPU's is unknown."""
    peak_memory_gib: float
    """The largest peak memory of any GPU."""
    memory_imbalance: float | None
    """Max over min of the GPUs' peak memory (1.0: even); None when a GPU used none."""
    utilization_imbalance: float | None
    """Max over min of the GPUs' mean utilization; None when a GPU was idle or unread."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def metrics(self) -> dict[str, float]:
        """The figures as MLflow metric names (finite numbers only)."""
        out = {
            "telemetry/duration_s": self.duration_s,
            "telemetry/peak_memory_gib": self.peak_memory_gib,
            "telemetry/energy_j": self.energy_j,
            "telemetry/imbalance/peak_memory": self.memory_imbalance,
            "telemetry/imbalance/utilization": self.utilization_imbalance,
        }
        for g in self.gpus:
            out[f"{g.gpu}/peak_memory_gib"] = g.peak_memory_gib
            out[f"{g.gpu}/mean_memory_gib"] = g.mean_memory_gib
            out[f"{g.gpu}/mean_utilization_pct"] = g.mean_utilization_pct
            out[f"{g.gpu}/energy_j"] = g.energy_j
        return {k: float(v) for k, v in out.items() if v is not None and math.isfinite(v)}


def ratio(values: list[float | None]) -> float | None:
    if len(values) < 2 or any(v is None or v <= 0 for v in values):
        return None
    known = [v for v in values if v is not None]
    return max(known) / min(known)


def _energy(samples: list[Sample]) -> tuple[float | None, str | None]:
    counted = [s for s in samples if s.energy_j is not None]
    if len(counted) >= 2 and len(counted) == len(samples):
        last, first = counted[-1].energy_j, counted[0].energy_j
        assert last is not None and first is not None
        return last - first, "counter"
    powered = [s for s in samples if s.power_w is not None]
    if len(powered) < 2:
        return None, None
    joules = 0.0
    for a, b in pairwise(powered):
        assert a.power_w is not None and b.power_w is not None
        joules += (a.power_w + b.power_w) / 2 * (b.t - a.t)
    return joules, "power"


def _gpu_phase(label: str, samples: list[Sample]) -> GpuPhase:
    memory = [s.memory_used_mib for s in samples]
    util = [s.utilization_pct for s in samples if s.utilization_pct is not None]
    energy, source = _energy(samples)
    return GpuPhase(
        gpu=label,
        samples=len(samples),
        peak_memory_gib=max(memory) * GIB_PER_MIB,
        mean_memory_gib=sum(memory) / len(memory) * GIB_PER_MIB,
        mean_utilization_pct=sum(util) / len(util) if util else None,
        energy_j=energy,
        energy_from=source,
    )


def summarize(recordings: list[Recording], phases: list[Phase] | None = None) -> list[PhaseSummary]:
    """Every phase's figures over the GPUs of every recording.

    Args:
        recordings: one per node (the run's own node first).
        phases: the run's phases; by default the first recording's.
    """
    if not recordings:
        return []
    phases = recordings[0].phases if phases is None else phases
    several = len(recordings) > 1
    series: list[tuple[str, list[float], list[Sample]]] = []  # per GPU, in time order
    for rec in recordings:
        for gpu in rec.gpus:
            samples = [s for s in rec.samples if s.gpu == gpu.index]
            label = f"{rec.node}/gpu{gpu.index}" if several else f"gpu{gpu.index}"
            series.append((label, [s.t for s in samples], samples))
    out = []
    for phase in phases:
        end = phase.end if phase.end is not None else math.inf
        gpus = []
        for label, times, samples in series:
            within = samples[bisect_left(times, phase.start) : bisect_right(times, end)]
            if within:
                gpus.append(_gpu_phase(label, within))
        if not gpus:
            continue
        energies = [g.energy_j for g in gpus]
        duration = (phase.end if phase.end is not None else phase.start) - phase.start
        out.append(
            PhaseSummary(
                name=phase.name,
                duration_s=duration,
                gpus=gpus,
                energy_j=None if None in energies else sum(e for e in energies if e is not None),
                peak_memory_gib=max(g.peak_memory_gib for g in gpus),
                memory_imbalance=ratio([g.peak_memory_gib for g in gpus]),
                utilization_imbalance=ratio([g.mean_utilization_pct for g in gpus]),
            )
        )
    return out
