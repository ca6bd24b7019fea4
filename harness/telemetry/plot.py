"""One PNG per run: memory and utilization of every GPU over time, the phases shaded and named."""

from __future__ import annotations

from pathlib import Path

from harness.machine.nvml import Sample
from harness.telemetry.sampler import Phase, Recording

_SHADES = ("#dbe9f6", "#fde5cc")


def _series(recordings: list[Recording]) -> dict[str, list[Sample]]:
    several = len(recordings) > 1
    out: dict[str, list[Sample]] = {}
    for rec in recordings:
        for s in rec.samples:
            label = f"{rec.node}/gpu{s.gpu}" if several else f"gpu{s.gpu}"
            out.setdefault(label, []).append(s)
    return out


def plot(recordings: list[Recording], phases: list[Phase], path: Path, title: str = "") -> Path:
    """Draw memory (GiB) and utilization (%) of every GPU against seconds since sampling began.

    Uses matplotlib's Agg canvas through ``Figure`` (no pyplot, no display, no global state).
    """
    from matplotlib.figure import Figure

    t0 = min(rec.started for rec in recordings)
    fig = Figure(figsize=(11, 6.5), layout="constrained")
    memory_ax, util_ax = fig.subplots(2, 1, sharex=True)
    for label, samples in sorted(_series(recordings).items()):
        times = [s.t - t0 for s in samples]
        memory_ax.plot(times, [s.memory_used_mib / 1024 for s in samples], label=label, lw=1.2)
        util = [(s.t - t0, s.utilization_pct) for s in samples if s.utilization_pct is not None]
        util_ax.plot([t for t, _ in util], [u for _, u in util], label=label, lw=1.2)
    for i, phase in enumerate(phases):
        start = phase.start - t0
        end = (phase.end if phase.end is not None else phase.start) - t0
        for ax in (memory_ax, util_ax):
            ax.axvspan(start, end, color=_SHADES[i % 2], alpha=0.8, lw=0, zorder=0)
        memory_ax.annotate(
            phase.name,
            xy=((start + end) / 2, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(0, 3),
            textcoords="offset points",
            ha="center",
            va="bottom",
            rotation=30 if len(phases) > 4 else 0,
            fontsize=8,
        )
    memory_ax.set_ylabel("memory used (GiB)")
    util_ax.set_ylabel("utilization (%)")
    util_ax.set_ylim(-2, 102)
    util_ax.set_xlabel("seconds since sampling began")
    memory_ax.legend(loc="upper left", fontsize=8, ncols=min(8, len(_series(recordings))))
    if title:
        fig.suptitle(title, fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path
