"""The lightweight engine: lm-eval's Hugging Face model on the CPU or one GPU."""

from __future__ import annotations

import gc
import logging
from typing import TYPE_CHECKING, Any

from harness.engines.base import AnswersInProcess, recordable
from harness.paths import resolve_project_path

if TYPE_CHECKING:
    from harness.planning.plan import Plan

log = logging.getLogger(__name__)


class HFEngine(AnswersInProcess):
    """``lm_eval.models.huggingface.HFLM`` built once; lm-eval calls it for every dataset."""

    def __init__(self, plan: Plan) -> None:
        """Build the model the plan says, on the plan's device (``auto`` was decided there),
        computing with the plan's threads on the CPU."""
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
        if strategy.max_batch_size is not None:
            kwargs["max_batch_size"] = strategy.max_batch_size
        if model.revision:
            kwargs["revision"] = model.revision
        if strategy.max_model_len:
            kwargs["max_length"] = strategy.max_model_len
        kwargs |= plan.engine_args  # the run's reasoning settings (harness/config/evaluation.py)
        if self.device == "cpu" and plan.threads_per_rank > 0:
            # else torch takes every CPU of the affinity mask, whatever share the plan gave
            import torch

            torch.set_num_threads(plan.threads_per_rank)
        log.info("loading %s on %s (%s)", self.pretrained, self.device, self.dtype)
        self.lm: Any = HFLM(**kwargs)
        self._batch_size = strategy.batch_size
        self.engine_args = dict(plan.engine_args)

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "hf",
            "pretrained": self.pretrained,
            "device": self.device,
            "dtype": self.dtype,
            "batch_size": self._batch_size,
            # what batch_size=auto became: lm-eval's sizes found, by schedule step
            "batch_sizes_found": dict(getattr(self.lm, "batch_sizes", None) or {}),
            "max_length": self.lm.max_length if self.lm is not None else None,
            **({"engine_config": self.engine_config()} if self.engine_args else {}),
        }

    def engine_config(self) -> dict[str, Any]:
        """What the loaded model holds for each of ``engine_args``, read back from it (HFLM's
        attribute, else the model config's; transformers keeps the attention as
        ``_attn_implementation``)."""
        config = getattr(getattr(self.lm, "model", None), "config", None)
        found: dict[str, Any] = {}
        for key in self.engine_args:
            name = "_attn_implementation" if key == "attn_implementation" else key
            found[key] = recordable(getattr(self.lm, key, getattr(config, name, None)))
        return found

    def close(self) -> None:
        if self.lm is None:
            return
        self.lm = None
        gc.collect()
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()
