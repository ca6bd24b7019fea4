"""Each dataset's share of the GPUs when datasets ran at once (``max_concurrent_datasets``).

While several datasets are in flight, the phase marked is all of them, named ``a+b`` (their
names joined by ``+``, in the order they started). A GPU's work in such a phase is not one
dataset's: its energy is split among the datasets in flight by each one's share of the tokens
(read and generated, as ``DatasetOutcome`` counts them), so the datasets' energies add up to the
phases' and the run's totals stay what was measured. Time, memory and utilization are shared, not
split: a dataset's ``duration_s`` is its time in flight (overlapping another's), its peak memory
the peak of the phases it was in, its utilization their mean, weighted by readings.
"""

from __future__ import annotations

from dataclasses import replace

from harness.telemetry.summary import GpuPhase, PhaseSummary, ratio

SEPARATOR = "+"


def members(phase: str) -> list[str]:
    """The datasets of a phase (one, or several in flight together); ``load`` is its own."""
    return phase.split(SEPARATOR)


def attribute(phases: list[PhaseSummary], tokens: dict[str, int]) -> list[PhaseSummary]:
    """One summary per phase name that is not shared (``load``, a dataset alone), and one per
    dataset of a shared phase, its energy that dataset's share; a dataset found in several
    phases gets them merged. Without shared phases, ``phases`` as they are."""
    if not any(SEPARATOR in p.name for p in phases):
        return phases
    parts: dict[str, list[tuple[PhaseSummary, float]]] = {}
    for phase in phases:
        names = members(phase.name)
        weights = [tokens.get(n, 0) for n in names]
        total = sum(weights)
        for name, weight in zip(names, weights, strict=True):
            share = weight / total if total else 1 / len(names)
            parts.setdefault(name, []).append((phase, share))
    return [_merged(name, found) for name, found in parts.items()]


def _scaled(value: float | None, share: float) -> float | None:
    return None if value is None else value * share


def _merged(name: str, found: list[tuple[PhaseSummary, float]]) -> PhaseSummary:
    if len(found) == 1 and found[0][1] == 1.0:
        return replace(found[0][0], name=name)
    gpus: dict[str, list[tuple[GpuPhase, float]]] = {}
    for phase, share in found:
        for gpu in phase.gpus:
            gpus.setdefault(gpu.gpu, []).append((gpu, share))
    merged = [_merged_gpu(label, parts) for label, parts in gpus.items()]
    energies = [_scaled(p.energy_j, share) for p, share in found]
    return PhaseSummary(
        name=name,
        duration_s=sum(p.duration_s for p, _ in found),
        gpus=merged,
        energy_j=None if None in energies else sum(e for e in energies if e is not None),
        peak_memory_gib=max(p.peak_memory_gib for p, _ in found),
        memory_imbalance=ratio([g.peak_memory_gib for g in merged]),
        utilization_imbalance=ratio([g.mean_utilization_pct for g in merged]),
    )


def _merged_gpu(label: str, parts: list[tuple[GpuPhase, float]]) -> GpuPhase:
    samples = sum(g.samples for g, _ in parts)
    utils = [(g.mean_utilization_pct, g.samples) for g, _ in parts]
    known = [(u, n) for u, n in utils if u is not None]
    energies = [_scaled(g.energy_j, share) for g, share in parts]
    return GpuPhase(
        gpu=label,
        samples=samples,
        peak_memory_gib=max(g.peak_memory_gib for g, _ in parts),
        mean_memory_gib=sum(g.mean_memory_gib * g.samples for g, _ in parts) / max(samples, 1),
        mean_utilization_pct=(
            sum(u * n for u, n in known) / max(sum(n for _, n in known), 1) if known else None
        ),
        energy_j=None if None in energies else sum(e for e in energies if e is not None),
        energy_from=parts[0][0].energy_from,
    )
