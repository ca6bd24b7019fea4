"""Sweeps on a real SLURM cluster on localhost (start_slurm.sh / stop_slurm.sh beside this file)."""
