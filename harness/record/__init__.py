"""What a run leaves on disk: the run directory (``rundir.py`` names every file), its summary,
events and provenance, and the result store with its request journals."""
