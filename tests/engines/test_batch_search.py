"""``batch_size=auto`` on the CPU: lm-eval's search at a fifth of its cost, guard kept (#35)."""

from __future__ import annotations

import gc

import pytest

from harness.engines.inprocess.batch_search import BatchSizeSearch


class Request:
    """What the search reads of lm-eval's ``Instance``: its ``args``."""

    def __init__(self, *args: object) -> None:
        self.args = args


class Tokenizer:
    """One token per character."""

    def __call__(self, texts, add_special_tokens=False):
        return {"input_ids": [list(range(len(t))) for t in texts]}


class CpuLM:
    """A causal model on the CPU that runs out of memory above ``fits`` sequences a pass, as
    torch's CPU allocator says it."""

    device = "cpu"
    backend = "causal"
    softmax_dtype = None
    max_length = 256

    def __init__(self, max_batch_size: int, fits: int) -> None:
        self.max_batch_size = max_batch_size
        self.fits = fits
        self.passes: list[tuple[int, int]] = []
        self.tokenizer = Tokenizer()

    def _model_call(self, batch):
        import torch

        self.passes.append(tuple(batch.shape))
        if batch.shape[0] > self.fits:
            raise RuntimeError(
                "[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: "
                "can't allocate memory: you tried to allocate 99 bytes."
            )
        return torch.zeros((*batch.shape, 3))

    def _detect_batch_size(self, *args, **kwargs):
        raise AssertionError("lm-eval's five-pass search is for GPUs")


def test_a_cpu_search_is_one_pass_a_size_without_garbage_collection(monkeypatch):
    """lm-eval's search runs five forward passes at each size and ``gc.collect`` before and
    after: two searches were 18% of a two-dataset run at the size they found (issue #35). On
    the CPU one pass a size answers the same, and the guard stays: a size the allocator refuses
    steps down by accelerate's 0.9, as lm-eval's does."""
    collected: list[int] = []
    monkeypatch.setattr(gc, "collect", lambda *a: collected.append(1) or 0)
    lm = CpuLM(max_batch_size=64, fits=50)
    search = BatchSizeSearch(lm)
    requests = [Request("1 + 1 =", " 2"), Request("10 + 10 =", " 20")]
    # accelerate's steps from 64: 57, 51, 45 (the first that fits); one pass each, at the
    # request's length bucket (11 characters + 2 -> 16)
    assert search.size_for("loglikelihood", requests) == 45
    assert [n for n, _ in lm.passes] == [64, 57, 51, 45]
    assert {length for _, length in lm.passes} == {16}
    assert collected == []
    assert search.searches == 1 and search.searched == [16]


def test_nothing_fitting_gives_lm_evals_one_and_other_errors_are_raised():
    """lm-eval answers 1 when no size fits; an error that is not out-of-memory is no reason to
    step down."""
    assert (
        BatchSizeSearch(CpuLM(max_batch_size=4, fits=0)).size_for(
            "loglikelihood", [Request("a", "b")]
        )
        == 1
    )

    class Broken(CpuLM):
        def _model_call(self, batch):
            raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        BatchSizeSearch(Broken(max_batch_size=4, fits=4)).size_for(
            "loglikelihood", [Request("a", "b")]
        )
