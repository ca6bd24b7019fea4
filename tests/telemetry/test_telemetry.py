"""GPU telemetry against a scripted fake NVML (tests/fake_nvml), and the real GPU-less path.

The fake stands in for ``pynvml`` in this process (``sys.modules``) with a scripted node: three
GPUs whose memory, utilization, power and energy counter change reading by reading, GPU 2 without
an energy counter (its energy is power integrated), GPUs 0 and 1 joined by NVLink.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from harness.machine.nvml import pcie_only_pairs
from harness.telemetry.export import csv_points, to_csv, tokens_per_joule
from harness.telemetry.plot import plot
from harness.telemetry.sampler import Recording, open_sampler
from harness.telemetry.summary import summarize
from tests.conftest import FAKE_NVML as FAKE_NVML_DIR

FAKE_NVML = FAKE_NVML_DIR / "pynvml.py"

# Readings 0..7: start, load begins, (tick), load ends, arith begins, (tick), arith ends, stop.
NODE = {
    "gpus": [
        {
            "name": "NVIDIA H100 80GB HBM3",
            "total_mib": 81559,
            "used_mib": [0, 0, 4096, 8192, 8192, 10240, 9216, 0],
            "util": [0, 0, 10, 20, 20, 90, 70, 0],
            "power_w": [70, 70, 200, 200, 200, 600, 500, 70],
            "energy_j": [1000, 1000, 1100, 1300, 1300, 1700, 2300, 2400],
        },
        {
            "name": "NVIDIA H100 80GB HBM3",
            "total_mib": 81559,
            "used_mib": [0, 0, 2048, 4096, 4096, 5120, 4608, 0],
            "util": [0, 0, 5, 10, 10, 45, 35, 0],
            "power_w": [60, 60, 100, 100, 100, 300, 250, 60],
            "energy_j": [500, 500, 550, 650, 650, 850, 1150, 1200],
        },
        {
            "name": "NVIDIA A10",
            "total_mib": 23028,
            "used_mib": [0, 0, 1024, 2048, 2048, 2048, 2048, 0],
            "util": [0, 0, 50, 50, 50, 100, 100, 0],
            "power_w": [20, 20, 100, 140, 140, 150, 150, 20],
            "energy_j": None,
        },
    ],
    "nvlink": [[0, 1]],
}


class Clock:
    """Whole seconds from 100, one per reading."""

    def __init__(self) -> None:
        self.now = 99.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def scripted_run(node: dict) -> Recording:
    """Sample the scripted node through one load and one dataset, by hand (no waiting)."""
    sampler = open_sampler(interval_s=3600.0, clock=Clock())  # the thread never ticks by itself
    assert not isinstance(sampler, str), sampler
    sampler.start()  # reading 0 at t=100
    sampler.mark("load")  # 1 at t=101
    sampler.sample()  # 2
    sampler.mark(None)  # 3: load ends at t=103
    sampler.mark("arith")  # 4
    sampler.sample()  # 5
    sampler.mark(None)  # 6: arith ends at t=106
    return sampler.stop()  # 7


def test_phase_summaries_from_scripted_readings(fake_nvml):
    fake_nvml(NODE)
    rec = scripted_run(NODE)
    assert rec.error is None and rec.no_energy_counter == [2]
    assert len(rec.samples) == 8 * 3
    links = {(x.a, x.b): (x.link, x.path) for x in rec.topology}
    assert links == {(0, 1): ("NVLink", "NV"), (0, 2): ("PCIe", "PHB"), (1, 2): ("PCIe", "PHB")}

    load, arith = summarize([rec])
    assert (load.name, load.duration_s, arith.name, arith.duration_s) == ("load", 2, "arith", 2)
    g0, g1, g2 = load.gpus
    assert [g.samples for g in load.gpus] == [3, 3, 3]  # readings 1, 2, 3
    assert g0.peak_memory_gib == 8.0 and g0.mean_memory_gib == pytest.approx(4.0)
    assert g0.mean_utilization_pct == pytest.approx(10.0)
    assert (g0.energy_j, g0.energy_from) == (300.0, "counter")  # 1300 - 1000
    assert (g1.energy_j, g1.energy_from) == (150.0, "counter")
    # GPU 2 has no counter: (20+100)/2*1 + (100+140)/2*1 = 180 J
    assert (g2.energy_j, g2.energy_from) == (180.0, "power")
    assert load.energy_j == pytest.approx(630.0)
    assert load.peak_memory_gib == 8.0
    assert load.memory_imbalance == pytest.approx(8.0 / 2.0)  # GPU 0 vs GPU 2
    assert load.utilization_imbalance == pytest.approx(33.333 / 5.0, rel=1e-3)  # GPU 2 vs GPU 1

    a0, a1, a2 = arith.gpus
    assert a0.peak_memory_gib == 10.0 and a0.energy_j == 1000.0  # 2300 - 1300
    assert a1.energy_j == 500.0
    assert a2.energy_j == pytest.approx((140 + 150) / 2 + (150 + 150) / 2)
    assert arith.utilization_imbalance == pytest.approx((250 / 3) / 30)  # A10 vs GPU 1

    metrics = load.metrics()
    assert metrics["gpu0/energy_j"] == 300.0 and metrics["gpu2/peak_memory_gib"] == 2.0
    assert metrics["telemetry/imbalance/peak_memory"] == pytest.approx(4.0)
    assert arith.energy_j == pytest.approx(1000 + 500 + 295)
    assert tokens_per_joule([load, arith], {"arith": 3590}) == {"arith": pytest.approx(2.0)}


def test_series_and_csv_hold_every_reading_with_its_phase(fake_nvml):
    fake_nvml(NODE)
    rec = scripted_run(NODE)
    text = to_csv([rec], rec.phases)
    points = csv_points(text)  # the series as log_telemetry reads them back from telemetry.csv
    memory0 = [(v, step) for k, v, _, step in points if k == "gpu0/memory_used_mib"]
    assert memory0 == [(m, i) for i, m in enumerate(NODE["gpus"][0]["used_mib"])]
    rows = text.splitlines()
    assert rows[0].startswith("node,gpu,time,elapsed_s,phase,memory_used_mib")
    phases = [row.split(",")[4] for row in rows[1:] if row.split(",")[1] == "0"]
    assert phases == ["", "load", "load", "load", "arith", "arith", "arith", ""]
    assert Recording.from_dict(rec.to_dict()) == rec


def test_nvml_error_mid_run_stops_the_sampler_with_a_warning(fake_nvml, caplog):
    fake_nvml({**NODE, "fail_at": 5})  # GPU 0's sixth memory reading: "GPU is lost"
    with caplog.at_level(logging.WARNING):
        rec = scripted_run(NODE)
    assert rec.error is not None and "GPU is lost" in rec.error
    assert "GPU telemetry stopped: NVML failed" in caplog.text
    assert len([s for s in rec.samples if s.gpu == 0]) == 5  # readings 0..4 kept
    load, arith = summarize([rec])
    assert load.gpus[0].energy_j == 300.0  # the load was over before the error
    assert arith.gpus[0].samples == 1 and arith.gpus[0].energy_j is None
    assert arith.energy_j is None


def test_no_nvml_driver_says_why(fake_nvml, monkeypatch):
    monkeypatch.delenv("FAKE_NVML_SCRIPT", raising=False)
    monkeypatch.delenv("FAKE_NVML_GPUS", raising=False)
    assert open_sampler(1.0) == "NVML finds no driver (NVML Shared Library Not Found)"


def test_the_thread_samples_on_its_own_and_stops(fake_nvml):
    fake_nvml(NODE)
    sampler = open_sampler(interval_s=0.02)
    assert not isinstance(sampler, str)
    sampler.start()
    sampler.mark("load")
    time.sleep(0.3)
    rec = sampler.stop()
    assert not sampler._thread.is_alive()
    assert rec.thread_cpu_s > 0 and rec.mark_s > 0  # its own cost, measured
    ticks = len(rec.samples) // 3
    assert ticks >= 6, ticks  # 0.3 s at 50 Hz, with slack for a busy machine
    (load,) = summarize([rec])
    assert load.duration_s == pytest.approx(0.3, abs=0.2)


def test_plot_draws_every_gpu_and_phase(fake_nvml, tmp_path):
    from matplotlib.image import imread

    fake_nvml(NODE)
    rec = scripted_run(NODE)
    path = plot([rec], rec.phases, tmp_path / "telemetry.png", title="tiny | single")
    image = imread(path)
    assert image.shape[:2] == (650, 1100)


def test_tensor_parallel_group_without_nvlink_is_named(fake_nvml, monkeypatch):
    fake_nvml(NODE)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    sampler = open_sampler(1.0)
    assert not isinstance(sampler, str)
    links = sampler.recording.topology
    assert pcie_only_pairs(links, 2) == []  # GPUs 0 and 1: NVLink
    assert pcie_only_pairs(links, 3) == ["0-2 (PHB)", "1-2 (PHB)"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,2")
    assert pcie_only_pairs(links, 2) == ["1-2 (PHB)"]


def test_this_machine_has_no_gpu_and_the_run_goes_on(compose_cfg, capsys, caplog):
    """The real NVML of this GPU-less machine: one line in the log, none on the console."""
    from harness.config.schema import to_run_config
    from harness.runner import make_checked_plan
    from harness.telemetry.session import Telemetry

    run = to_run_config(compose_cfg("dataset=[arith_mc]"))
    plan = make_checked_plan(run)
    capsys.readouterr()
    with caplog.at_level(logging.INFO, logger="harness.phase"):
        telemetry = Telemetry.start(run.telemetry, plan)
    assert telemetry.sampler is None
    assert capsys.readouterr().out == ""
    (line,) = [r.getMessage() for r in caplog.records if "telemetry" in r.getMessage()]
    assert line.startswith("telemetry: no GPU telemetry on this node: NVML finds no driver")
    telemetry.on_event("load_started", {})
    assert telemetry.record(Path("/nonexistent"), []) is None


def test_interval_must_be_positive_and_is_refused_with_the_other_rules(compose_cfg, tmp_path):
    from harness.config.schema import to_run_config
    from harness.errors import ConfigError
    from harness.runner import make_checked_plan

    run = to_run_config(
        compose_cfg("dataset=[arith_mc]", "telemetry.interval_s=0", "strategy.batch_size=0")
    )
    with pytest.raises(ConfigError) as err:
        make_checked_plan(run)
    assert "telemetry.interval_s=0: must be a positive" in str(err.value)  # as typed
    assert "batch_size" in str(err.value)  # every problem at once
    plan_only = to_run_config(
        compose_cfg(
            "dataset=[arith_mc]",
            "telemetry.interval_s=-1",
            "plan_only=true",
            f"output_dir={tmp_path}",
        )
    )
    assert any("telemetry.interval_s=-1:" in p for p in make_checked_plan(plan_only).problems)


def test_the_plan_warns_when_a_tensor_parallel_group_spans_pcie(
    fake_nvml, monkeypatch, compose_cfg, caplog, tmp_path
):
    """Planned on this node (tier=local) with the scripted GPUs: 0-1 NVLink, 2 on PCIe."""
    from harness.config.schema import to_run_config
    from harness.machine import node as machine
    from harness.runner import make_checked_plan

    fake_nvml(NODE)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert machine.tensor_parallel_link_note(2) is None
    note = machine.tensor_parallel_link_note(3)
    assert note is not None and "0-2 (PHB), 1-2 (PHB)" in note and "CUDA_VISIBLE_DEVICES" in note

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,2")
    machine.this_node.cache_clear()
    try:
        run = to_run_config(
            compose_cfg(
                "model=llama3_1_8b",
                "strategy=tp2",
                "tier=local",
                "plan_only=true",
                f"output_dir={tmp_path}",
            )
        )
        with caplog.at_level(logging.WARNING, logger="harness"):
            plan = make_checked_plan(run)
    finally:
        machine.this_node.cache_clear()
    (warned,) = [n for n in plan.notes if "without NVLink" in n]
    assert "1-2 (PHB)" in warned
    assert any("without NVLink" in r.getMessage() for r in caplog.records)
