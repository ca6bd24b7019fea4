"""The local SLURM cluster for the service tests: the sweep tests' fixtures
(tests/sweep/conftest.py), shared, not copied (one cluster, its users counted across both)."""

from tests.sweep.conftest import local_slurm, slurm_cluster

__all__ = ["local_slurm", "slurm_cluster"]
