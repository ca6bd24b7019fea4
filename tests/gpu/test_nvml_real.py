"""harness's NVML reader and sampler on the real driver: the GPU as NVML lists it, and phases
that see a known allocation."""

from __future__ import annotations

import time

import pytest

from harness.machine.nvml import Reader, import_nvml, list_gpus
from harness.telemetry.sampler import open_sampler
from harness.telemetry.summary import summarize
from tests.gpu import cuda

pytestmark = pytest.mark.gpu

GIB = 1024**3


def test_nvml_lists_the_gpu_and_reads_it():
    cuda()
    nvml, why = import_nvml()
    assert nvml is not None, why
    try:
        gpus = list_gpus(nvml)
        assert gpus, "NVML lists no GPU"
        assert all(g.memory_total_mib > 10_000 and g.uuid.startswith("GPU-") for g in gpus)
        (sample, *_) = Reader(nvml, gpus).read(time.time)
        assert 0 < sample.memory_used_mib < gpus[0].memory_total_mib
        assert sample.power_w is None or sample.power_w > 0
    finally:
        nvml.nvmlShutdown()


def test_sampler_phases_see_an_allocation_of_2_gib():
    cuda()
    import torch

    torch.zeros(1, device="cuda")  # the CUDA context first: it belongs to neither phase
    torch.cuda.synchronize()
    sampler = open_sampler(0.05)
    assert not isinstance(sampler, str), sampler
    sampler.start()
    sampler.mark("idle")
    time.sleep(0.3)
    sampler.mark("allocated")
    block = torch.ones(2 * GIB // 4, dtype=torch.float32, device="cuda")
    torch.cuda.synchronize()
    time.sleep(0.3)
    sampler.mark(None)
    del block
    torch.cuda.empty_cache()
    recording = sampler.stop()
    assert recording.error is None
    phases = {p.name: p for p in summarize([recording])}
    grown = phases["allocated"].peak_memory_gib - phases["idle"].peak_memory_gib
    assert 1.9 <= grown <= 2.5, f"NVML saw {grown:.2f} GiB more, 2 GiB allocated"
    for phase in phases.values():
        assert phase.gpus[0].samples >= 2
        assert phase.energy_j is None or phase.energy_j >= 0
