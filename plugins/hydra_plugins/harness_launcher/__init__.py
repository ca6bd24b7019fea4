"""harness's Hydra launchers: per-shape SLURM job arrays (``hydra/launcher=slurm``) and a local
equivalent (``hydra/launcher=submitit_local``). The work is done in ``harness.sweep``."""
