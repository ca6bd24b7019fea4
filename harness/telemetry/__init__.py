"""GPU telemetry: every NVIDIA GPU of the node sampled through NVML, attributed to the run's phases.

``nvml`` reads the devices (and their topology), ``sampler`` samples them in a background thread and
marks phases, ``summary`` turns a recording into per-phase figures, ``plot`` draws it, and
``session`` is what a run holds: it starts the sampler before the load, follows the run's events
and, at the end, writes telemetry.json, telemetry.csv and telemetry.png and logs them to MLflow;
``nodes`` puts a sampler on every node of a Ray cluster and brings their recordings back.
Telemetry watches GPUs, not engines; it never ends an evaluation.
"""
