"""The lightweight engine: lm-eval's Hugging Face model on the CPU or one GPU."""

from __future__ import annotations

import gc
import logging
from collections.abc import Sequence
from typing import Any

from harness.config.schema import Device, RunConfig, load_dtype
from harness.engines.base import count_with
from harness.paths import resolve_project_path

log = logging.getLogger(__name__)


def pick_device(device: Device) -> str:
    """``auto`` means CUDA when torch sees a GPU, else the CPU."""
    if device != Device.auto:
        return device.value
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class HFEngine:
    """``lm_eval.models.huggingface.HFLM`` built once; lm-eval calls it for every dataset."""

    def __init__(self, run: RunConfig) -> None:
        from lm_eval.models.huggingface import HFLM

        model, strategy = run.model, run.strategy
        local = resolve_project_path(model.pretrained)
        self.pretrained = str(local) if local.is_dir() else model.pretrained
        self.device = pick_device(strategy.device)
        self.dtype = load_dtype(model, strategy).value
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
