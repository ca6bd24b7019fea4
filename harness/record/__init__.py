"""What a run leaves on disk: the run directory, results, events, provenance."""
