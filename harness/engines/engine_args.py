"""``strategy.engine_args``' check lives in ``harness.config.engine_args`` (the plan runs it, so
plan-only refuses a misspelt key too); its names stay importable here."""

from harness.config.engine_args import (
    FROM_PRETRAINED,
    accepted,
    engine_args_fields,
    init_parameters,
    unknown_problems,
)

__all__ = [
    "FROM_PRETRAINED",
    "accepted",
    "engine_args_fields",
    "init_parameters",
    "unknown_problems",
]
