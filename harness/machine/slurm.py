"""This node's SLURM job: the allocation's nodes and rank, and the variables a record keeps.

Read from SLURM's environment only (no ``scontrol``), so it works in any job step.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

BASE_PORT = 20000
"""A SLURM job's head listens on ``BASE_PORT + job_id % 10000``: jobs sharing a node differ."""

SLURM_VARIABLES = (
    "SLURM_JOB_ID",
    "SLURM_ARRAY_JOB_ID",
    "SLURM_ARRAY_TASK_ID",
    "SLURM_JOB_NAME",
    "SLURM_JOB_PARTITION",
    "SLURM_JOB_NODELIST",
    "SLURM_JOB_NUM_NODES",
    "SLURM_CLUSTER_NAME",
)
"""The SLURM variables the reproducibility record keeps."""


@dataclass
class SlurmAllocation:
    """The nodes of this SLURM job and which one this process runs on."""

    job_id: str
    nodes: list[str]
    node_rank: int

    @property
    def head(self) -> str:
        return self.nodes[0]

    @property
    def port(self) -> int:
        digits = re.sub(r"\D", "", self.job_id) or "0"
        return BASE_PORT + int(digits) % 10000


def expand_nodelist(text: str) -> list[str]:
    """``SLURM_JOB_NODELIST`` as host names: ``gpu[01-03,07],cpu5`` -> gpu01 gpu02 gpu03 gpu07
    cpu5 (what ``scontrol show hostnames`` prints, without needing it)."""
    hosts: list[str] = []
    for prefix, ranges, plain in re.findall(r"([^,\[]+)\[([^\]]+)\]|([^,\[\]]+)", text):
        if plain:
            hosts.append(plain.strip())
            continue
        for part in ranges.split(","):
            lo, _, hi = part.partition("-")
            if not hi:
                hosts.append(f"{prefix}{lo}")
                continue
            width = len(lo)
            hosts += [f"{prefix}{n:0{width}d}" for n in range(int(lo), int(hi) + 1)]
    return hosts


def slurm_allocation(environ: Mapping[str, str] | None = None) -> SlurmAllocation | None:
    """This job's allocation from SLURM's environment; None outside SLURM or on one node."""
    env = os.environ if environ is None else environ
    nodelist = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST")
    job_id = env.get("SLURM_JOB_ID")
    if not nodelist or not job_id:
        return None
    nodes = expand_nodelist(nodelist)
    if len(nodes) < 2:
        return None
    return SlurmAllocation(job_id=job_id, nodes=nodes, node_rank=int(env.get("SLURM_NODEID", "0")))


def slurm_variables() -> dict[str, str]:
    """The SLURM job this run is part of (empty outside SLURM)."""
    return {k: os.environ[k] for k in SLURM_VARIABLES if k in os.environ}
