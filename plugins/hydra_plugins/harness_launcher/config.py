"""Schemas of the launcher configs (conf/hydra/launcher/slurm.yaml, submitit_local.yaml).

They extend hydra-submitit's: a resource key left null is taken from each job's plan and tier
(``harness.sweep.plan.job_resources``); ``poll_s`` is ours.

No ``from __future__ import annotations`` here: Hydra runs plugin modules without registering them
in ``sys.modules``, where dataclasses look string annotations up.
"""

from dataclasses import dataclass

from hydra.core.config_store import ConfigStore
from hydra_plugins.hydra_submitit_launcher.config import LocalQueueConf, SlurmQueueConf


@dataclass
class HarnessSlurmQueueConf(SlurmQueueConf):
    _target_: str = "hydra_plugins.harness_launcher.launcher.HarnessSlurmLauncher"
    timeout_min: int | None = None
    nodes: int | None = None
    tasks_per_node: int | None = None
    mem_gb: float | None = None
    array_parallelism: int | None = None
    max_num_timeout: int = 2
    name: str = "harness"
    poll_s: float = 10.0


@dataclass
class HarnessLocalQueueConf(LocalQueueConf):
    _target_: str = "hydra_plugins.harness_launcher.launcher.HarnessLocalLauncher"
    timeout_min: int | None = None
    nodes: int | None = None
    tasks_per_node: int | None = None
    mem_gb: float | None = None
    array_parallelism: int | None = None
    max_num_timeout: int = 0
    name: str = "harness"
    poll_s: float = 1.0


ConfigStore.instance().store(
    group="hydra/launcher", name="harness_slurm", node=HarnessSlurmQueueConf, provider="harness"
)
ConfigStore.instance().store(
    group="hydra/launcher", name="harness_local", node=HarnessLocalQueueConf, provider="harness"
)
