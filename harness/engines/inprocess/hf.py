"""The lightweight engine: lm-eval's Hugging Face model on the CPU or one GPU."""

from __future__ import annotations

import gc
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from harness.engines.base import Answered, AnswersInProcess, recordable
from harness.engines.inprocess.batch_search import BatchSizeSearch, is_auto
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
        self.batch_search = BatchSizeSearch(self.lm) if is_auto(strategy.batch_size) else None
        """``batch_size=auto``: the sizes searched once per request shape (``batch_search.py``)."""

    def answer(self, op: str, requests: Sequence[Any]) -> Answered:
        """lm-eval's answers; under ``batch_size=auto`` at the size found for these requests'
        shape, so lm-eval does not search again at every call (every journal slice)."""
        if self.batch_search is None or not requests:
            return super().answer(op, requests)
        size = self.batch_search.size_for(op, requests)
        auto = self.lm.batch_size_per_gpu
        self.lm.batch_size_per_gpu = size  # lm-eval's batch_size: a fixed size, no search
        if op == "loglikelihood":  # as its own search leaves it (the result's config.batch_sizes)
            self.lm.batch_sizes = {0: size}
        try:
            return super().answer(op, requests)
        finally:
            self.lm.batch_size_per_gpu = auto

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "hf",
            "pretrained": self.pretrained,
            "device": self.device,
            "dtype": self.dtype,
            "batch_size": self._batch_size,
            # what batch_size=auto became: the size found for each request type, by length
            **(self._auto_record() if self.batch_search is not None else {}),
            "max_length": self.lm.max_length if self.lm is not None else None,
            **({"engine_config": self.engine_config()} if self.engine_args else {}),
        }

    def _auto_record(self) -> dict[str, Any]:
        assert self.batch_search is not None
        return {
            "batch_sizes_found": self.batch_search.record(),
            "batch_size_searches": self.batch_search.searches,
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
