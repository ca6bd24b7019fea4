"""This node: its facts, its GPUs through NVML, and its SLURM allocation (the ground floor)."""
