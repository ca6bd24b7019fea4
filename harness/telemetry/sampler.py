"""The sampler: every GPU of the node read in a background thread, the run's phases marked on it.

A phase boundary takes a reading of its own, at the instant the phase changes, so each phase's
first and last readings bound it exactly: energy from the counter is the difference of the two,
and a phase shorter than the interval still has both. An NVML error stops the sampler with one
warning; what it read until then is kept. Nothing here raises into the run.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from harness.machine.nvml import Gpu, Link, Reader, Sample, import_nvml, list_gpus, topology

log = logging.getLogger(__name__)


@dataclass
class Phase:
    """A named stretch of the run: ``load`` or a dataset's name."""

    name: str
    """``load``, or the dataset's name (as its child run is named)."""
    start: float
    """Wall-clock time it began (seconds since the epoch)."""
    end: float | None = None
    """When it ended; None while it runs."""


@dataclass
class Recording:
    """What one sampler saw on one node."""

    node: str
    """Host name of the node."""
    interval_s: float
    """Time between readings."""
    gpus: list[Gpu]
    """Every GPU of the node."""
    topology: list[Link]
    """How each pair of GPUs is joined (NVLink or PCIe)."""
    started: float
    """When sampling began."""
    ended: float | None = None
    """When sampling stopped."""
    samples: list[Sample] = field(default_factory=list)
    """Every reading, in time order (one per GPU per tick, plus one at each phase boundary)."""
    phases: list[Phase] = field(default_factory=list)
    """The marked phases, in order."""
    no_energy_counter: list[int] = field(default_factory=list)
    """GPUs without an energy counter: their energy is power integrated over time."""
    error: str | None = None
    """Why sampling stopped before the run ended (an NVML error), if it did."""
    thread_cpu_s: float = 0.0
    """CPU time the sampling thread used: telemetry's own cost, beside the run."""
    mark_s: float = 0.0
    """Time the run itself spent in phase marks (a reading at each boundary)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Recording:
        """The inverse of ``to_dict`` (a recording sent back by a node's sampler actor)."""
        data = dict(data)
        data["gpus"] = [Gpu(**g) for g in data["gpus"]]
        data["topology"] = [Link(**x) for x in data["topology"]]
        data["samples"] = [Sample(**s) for s in data["samples"]]
        data["phases"] = [Phase(**p) for p in data["phases"]]
        return cls(**data)


class Sampler:
    """Reads every GPU every ``interval_s`` seconds in a daemon thread until ``stop``."""

    def __init__(
        self, reader: Reader, interval_s: float, clock: Callable[[], float] = time.time
    ) -> None:
        self.reader = reader
        self.interval_s = interval_s
        self.clock = clock
        self.recording = Recording(
            node=socket.gethostname(),
            interval_s=interval_s,
            gpus=reader.gpus,
            topology=[],
            started=clock(),
        )
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Take the first reading now, then one every ``interval_s`` in a background thread."""
        self.sample()
        self._thread = threading.Thread(target=self._loop, name="telemetry-sampler", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        start = time.thread_time()
        while not self._stopping.wait(self.interval_s):
            self.sample()
        self.recording.thread_cpu_s = time.thread_time() - start

    def sample(self) -> None:
        """Read every GPU now (the thread calls this every ``interval_s``)."""
        with self._lock:
            if self.recording.error is not None or self.recording.ended is not None:
                return
            try:
                self.recording.samples.extend(self.reader.read(self.clock))
            except Exception as err:  # an NVML error (or a broken driver): stop, keep the rest
                self.recording.error = f"{type(err).__name__}: {err}"
                self._stopping.set()
                log.warning(
                    "GPU telemetry stopped: NVML failed (%s); the run goes on, and what was "
                    "sampled until now is kept",
                    self.recording.error,
                )

    def mark(self, phase: str | None) -> None:
        """End the current phase and begin ``phase`` (None: between phases), with a reading."""
        start = time.perf_counter()
        self.sample()
        with self._lock:
            now = self.recording.samples[-1].t if self.recording.samples else self.clock()
            if self.recording.error is not None:
                now = self.clock()
            current = self.recording.phases[-1] if self.recording.phases else None
            if current is not None and current.end is None:
                current.end = now
            if phase is not None:
                self.recording.phases.append(Phase(phase, now))
            self.recording.mark_s += time.perf_counter() - start

    def stop(self) -> Recording:
        """Close the open phase, take a last reading and stop the thread; returns the recording."""
        self.mark(None)
        self._stopping.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=max(5.0, 2 * self.interval_s))
        with self._lock:
            self.recording.ended = self.clock()
            self.recording.no_energy_counter = [
                g.index for g in self.reader.gpus if not self.reader.has_energy_counter(g.index)
            ]
        return self.recording


def open_sampler(
    interval_s: float,
    clock: Callable[[], float] = time.time,
    visible: Sequence[str] | None = None,
) -> Sampler | str:
    """A sampler of every GPU of this node (not started), or why there is none; ``visible``:
    only the GPUs a process's ``CUDA_VISIBLE_DEVICES`` entries name (``select_gpus``)."""
    nvml, why_not = import_nvml()
    if nvml is None:
        return why_not or "NVML unavailable"
    try:
        gpus = select_gpus(list_gpus(nvml), visible)
        if not gpus:
            return "the process watched sees no GPU (its CUDA_VISIBLE_DEVICES is empty)"
        sampler = Sampler(Reader(nvml, gpus), interval_s, clock)
        sampler.recording.topology = topology(nvml, gpus)
    except nvml.NVMLError as err:
        return f"NVML failed while listing the GPUs ({err})"
    return sampler


def select_gpus(gpus: list[Gpu], visible: Sequence[str] | None) -> list[Gpu]:
    """The GPUs ``CUDA_VISIBLE_DEVICES`` entries name: an index (NVML's order, which is CUDA's
    under ``CUDA_DEVICE_ORDER=PCI_BUS_ID``) or a UUID or its prefix (``GPU-8f2...``). None: every
    GPU; entries that name none of them (MIG instances, ``-1``): every GPU too, as nothing better
    is known; no entry: none."""
    if visible is None:
        return gpus
    chosen: list[Gpu] = []
    for entry in visible:
        if entry.isdigit():
            found = [g for g in gpus if g.index == int(entry)]
        else:
            found = [g for g in gpus if entry.startswith("GPU-") and g.uuid.startswith(entry)]
        chosen += [g for g in found if g not in chosen]
    return chosen if chosen or not visible else gpus
