"""The lightweight engine: lm-eval's Hugging Face model on the CPU or one GPU."""

from __future__ import annotations

import gc
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from harness.engines.base import count_with
from harness.paths import resolve_project_path

if TYPE_CHECKING:
    from harness.planning.plan import Plan

log = logging.getLogger(__name__)


class HFEngine:
    """``lm_eval.models.huggingface.HFLM`` built once; lm-eval calls it for every dataset."""

    def __init__(self, plan: Plan) -> None:
        """Build the model the plan says, on the plan's device (``auto`` was decided there)."""
        from lm_eval.models.huggingface import HFLM

        model, strategy = plan.model_used, plan.strategy_used
        local = resolve_project_path(model.pretrained)
        self.pretrained = str(local) if local.is_dir() else model.pretrained
        self.device = plan.device
        self.dtype = plan.dtype
        kwargs: dict[str, Any] = {
            "pretrained": self.pretrained,
            "device": self.device,
            "dtype": self.dtype,
            "batch_size": strategy.batch_size,
            "trust_remote_code": model.trust_remote_code,
        }
        if model.revision:
            kwargs["revision"] = model.revision
        if strategy.max_model_len:
            kwargs["max_length"] = strategy.max_model_len
        kwargs |= plan.engine_args  # the run's reasoning settings (harness/config/evaluation.py)
        log.info("loading %s on %s (%s)", self.pretrained, self.device, self.dtype)
        self.lm: Any = HFLM(**kwargs)
        self._batch_size = strategy.batch_size

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "hf",
            "pretrained": self.pretrained,
            "device": self.device,
            "dtype": self.dtype,
            "batch_size": self._batch_size,
            "max_length": self.lm.max_length if self.lm is not None else None,
        }

    def count_tokens(self, texts: Sequence[str]) -> int:
        return count_with(self.lm.tokenizer, texts)

    def close(self) -> None:
        if self.lm is None:
            return
        self.lm = None
        gc.collect()
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()
