"""Engines that serve a model to lm-eval; ``build_engine`` picks one from the strategy."""

from __future__ import annotations

from harness.config.schema import EngineKind, RunConfig
from harness.engines.base import Engine


def build_engine(run: RunConfig) -> Engine:
    """Load the model as the strategy says; called once per run.

    Args:
        run: the validated run configuration.

    Returns:
        A resident engine; call ``close()`` when every dataset is done.
    """
    if run.strategy.engine == EngineKind.hf:
        from harness.engines.hf import HFEngine

        return HFEngine(run)
    # validate() refuses other engines before we get here.
    raise ValueError(f"engine {run.strategy.engine.value!r} is not available")
