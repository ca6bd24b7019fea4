"""A local sweep's jobs packed onto this node: each job starts as soon as the GPUs, CPU cores and
host memory it needs are free, and gets its own, disjoint share of them.

A job's share (:class:`Grant`) reaches it through its environment: ``CUDA_VISIBLE_DEVICES`` (its
GPUs), its CPU affinity (set by its controller before anything of the job starts,
``harness.sweep.local``) and ``HARNESS_JOB_MEMORY_GIB`` (the host memory its plan sizes itself
by, as a SLURM job's plan reads ``SLURM_MEM_PER_NODE``). With ``tier=local`` the job's plan is
made from what it was given: its thread count from its cores, its KV cache from its memory.

What a job needs (:func:`local_resources`): its plan's GPUs; CPU cores and memory in proportion
(a tp4 job on an 8-GPU node takes half the cores and half the memory), or, for a job without
GPUs, the cores its tier asks for (``tier.cpus_per_task``, which its plan's threads come from;
``tier=local`` measures the whole node), at most the node, or its share of the node when
``hydra.launcher.array_parallelism`` splits the cores among that many jobs, and memory in
proportion to its cores. A key set in the launcher config wins.
``array_parallelism`` still caps how many of a group run at once; left null, the node decides.
A job that needs more than this node has is refused before anything starts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from harness.machine.node import JOB_MEMORY_VAR


@dataclass(frozen=True)
class Need:
    """What one job takes of the node while it runs."""

    gpus: int
    cpus: int
    memory_gib: float

    @classmethod
    def of(cls, params: dict[str, Any]) -> Need:
        """The need a job's resolved launcher keys state (``local_resources``)."""
        return cls(
            gpus=int(params.get("gpus_per_node") or 0),
            cpus=int(params.get("cpus_per_task") or 1),
            memory_gib=float(params.get("mem_gb") or 0.0),
        )


@dataclass(frozen=True)
class Grant:
    """The GPUs, cores and memory one job was given: disjoint from every other job's."""

    gpus: tuple[str, ...]
    cpus: tuple[int, ...]
    memory_gib: float

    def environment(self) -> dict[str, str]:
        """The job's variables that hand it its share (its controller sets its affinity)."""
        return {
            "CUDA_VISIBLE_DEVICES": ",".join(self.gpus),
            "HARNESS_JOB_CPUS": ",".join(str(c) for c in self.cpus),
            JOB_MEMORY_VAR: f"{self.memory_gib:g}",
        }

    def to_dict(self) -> dict[str, Any]:
        return {"gpus": list(self.gpus), "cpus": list(self.cpus), "memory_gib": self.memory_gib}

    @classmethod
    def of(cls, given: dict[str, Any]) -> Grant:
        """The grant ``to_dict`` wrote (the sweep's outcome JSON)."""
        return cls(tuple(given["gpus"]), tuple(given["cpus"]), float(given["memory_gib"]))

    def describe(self) -> str:
        """``GPUs 0,1 CPUs 0-3 8 GiB`` (``CPUs 2`` on a node without GPUs)."""
        gpus = f"GPUs {','.join(self.gpus)} " if self.gpus else ""
        return f"{gpus}CPUs {cpu_ranges(self.cpus)} {self.memory_gib:g} GiB"


def cpu_ranges(cpus: tuple[int, ...] | list[int]) -> str:
    """``0-3,6`` for cores 0, 1, 2, 3 and 6 (as ``taskset -c`` and /proc write them)."""
    runs: list[list[int]] = []
    for cpu in sorted(cpus):
        if runs and runs[-1][1] == cpu - 1:
            runs[-1][1] = cpu
        else:
            runs.append([cpu, cpu])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs) or "-"


@dataclass
class NodePool:
    """This node's GPUs, cores and memory, and which of them no running job holds."""

    gpus: tuple[str, ...]
    cpus: tuple[int, ...]
    memory_gib: float
    free_gpus: list[str] = field(default_factory=list)
    free_cpus: list[int] = field(default_factory=list)
    free_memory_gib: float = 0.0

    def __post_init__(self) -> None:
        self.free_gpus, self.free_cpus = list(self.gpus), list(self.cpus)
        self.free_memory_gib = self.memory_gib

    @classmethod
    def this_node(cls) -> NodePool:
        """What this process may use: its visible GPUs, the cores of its affinity, its memory."""
        import os

        from harness.machine.node import this_node, visible_gpu_ids

        node = this_node()
        cpus = tuple(sorted(os.sched_getaffinity(0)))
        return cls(tuple(visible_gpu_ids(node.gpus)), cpus, round(node.host_memory_gib, 1))

    def problems(self, need: Need, label: str) -> list[str]:
        """Why a job with this need could never start here (empty when it can)."""
        out = []
        if need.gpus > len(self.gpus):
            out.append(
                f"{label} needs {need.gpus} GPU(s) and this node has {len(self.gpus)}. Fix: run "
                "the sweep where its GPUs are (hydra/launcher=slurm), or plan it for this node "
                "(tier=local strategy=auto)."
            )
        if need.cpus > len(self.cpus):
            out.append(
                f"hydra.launcher.cpus_per_task={need.cpus}: {label} needs {need.cpus} CPU "
                f"core(s) and this node gives the sweep {len(self.cpus)}. Fix: "
                f"hydra.launcher.cpus_per_task={len(self.cpus)} or fewer."
            )
        if need.memory_gib > self.memory_gib:
            out.append(
                f"hydra.launcher.mem_gb={need.memory_gib:g}: {label} needs {need.memory_gib:g} "
                f"GiB of host memory and this node has {self.memory_gib:g}. Fix: "
                f"hydra.launcher.mem_gb={math.floor(self.memory_gib)} or less."
            )
        return out

    def take(self, need: Need) -> Grant | None:
        """A share for a job with this need, taken from what is free; None while it is not."""
        fits = (
            need.gpus <= len(self.free_gpus)
            and need.cpus <= len(self.free_cpus)
            and need.memory_gib <= self.free_memory_gib + 1e-9
        )
        if not fits:
            return None
        gpus, self.free_gpus = self.free_gpus[: need.gpus], self.free_gpus[need.gpus :]
        cpus = sorted(self.free_cpus)[: need.cpus]  # the lowest free cores: neighbours stay
        self.free_cpus = [c for c in self.free_cpus if c not in cpus]
        self.free_memory_gib -= need.memory_gib
        return Grant(tuple(gpus), tuple(cpus), need.memory_gib)

    def give_back(self, grant: Grant) -> None:
        """A job has ended: its share is free again."""
        self.free_gpus = [g for g in self.gpus if g in self.free_gpus or g in grant.gpus]
        self.free_cpus = sorted({*self.free_cpus, *grant.cpus})
        self.free_memory_gib = min(self.memory_gib, self.free_memory_gib + grant.memory_gib)


def local_resources(
    launcher: dict[str, Any], derived: dict[str, Any], node: NodePool
) -> dict[str, Any]:
    """A local job's launcher keys: ``derived`` (``job_resources``: its plan's GPUs, its tier's
    time limit) with CPU cores, memory and ``array_parallelism`` sized for this node, wherever
    the launcher config (``launcher``, as composed) left them null."""
    out = dict(derived)
    gpus = int(out.get("gpus_per_node") or 0)
    at_once = launcher.get("array_parallelism")
    # With GPUs, the job's share of them; without, the whole node, or the cores split among the
    # jobs said to run at once, and no more than its tier's cores, which its plan's threads
    # come from (tier.cpus_per_task=1: two jobs run side by side on two cores).
    share = gpus / len(node.gpus) if gpus and node.gpus else 1.0 / (at_once or 1)
    if launcher.get("cpus_per_task") is None:
        cpus = max(1, math.floor(len(node.cpus) * share))
        if not gpus:
            cpus = min(cpus, int(out.get("cpus_per_task") or cpus))
        out["cpus_per_task"] = cpus
    if launcher.get("mem_gb") is None:
        if not gpus:
            share = out["cpus_per_task"] / max(1, len(node.cpus))
        # rounded down: shares that add up to the node must fit in it
        out["mem_gb"] = math.floor(node.memory_gib * min(1.0, share) * 10) / 10
    out["array_parallelism"] = at_once  # None: as many as the node has room for
    out["nodes"], out["tasks_per_node"] = 1, 1
    return out
