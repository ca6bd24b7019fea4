"""Property: whatever overrides a user types, harness plans/runs or exits with a clean error."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.config.argv import GROUPS, group_options
from tests.conftest import run_harness

pytestmark = pytest.mark.slow

NUMERIC_KEYS = [
    "strategy.tensor_parallel_size",
    "strategy.pipeline_parallel_size",
    "strategy.data_parallel_size",
    "strategy.batch_size",
    "strategy.gpu_memory_utilization",
    "strategy.max_model_len",
    "strategy.concurrent_seqs",
    "dataset.arith_mc.limit",
    "dataset.arith_mc.num_fewshot",
    "model.num_layers",
    "model.num_kv_heads",
    "tier.gpus_per_node",
    "tier.gpu_memory_gib",
    "seed",
]
words = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_0123456789", min_size=1, max_size=10)
junk = st.text(
    alphabet=st.characters(codec="ascii", exclude_characters="\x00"), min_size=0, max_size=12
)
numbers = st.one_of(
    st.integers(-10, 10**7).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    words,
    junk,
)
group_choice = st.sampled_from(GROUPS).flatmap(
    lambda g: st.one_of(st.sampled_from(group_options(g)), words).map(lambda v: f"{g}={v}")
)
numeric = st.tuples(st.sampled_from(NUMERIC_KEYS), numbers).map(lambda kv: f"{kv[0]}={kv[1]}")
override = st.one_of(group_choice, numeric, junk)


@settings(
    max_examples=int(os.environ.get("HARNESS_PROPERTY_EXAMPLES", "40")),
    deadline=None,
    derandomize=os.environ.get("HARNESS_PROPERTY_RANDOM") != "1",
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(st.lists(override, min_size=1, max_size=4))
def test_any_overrides_plan_or_fail_cleanly(overrides):
    with tempfile.TemporaryDirectory() as tmp:
        proc = run_harness(
            [*overrides, "plan_only=true", "tracking=none", f"hydra.run.dir={tmp}/run"],
            Path(tmp),
            timeout=120,
        )
    text = proc.stdout + proc.stderr
    assert "Traceback" not in text, f"{overrides}\n{text[-4000:]}"
    assert proc.returncode in (0, 1, 2), f"{overrides} -> {proc.returncode}\n{text[-2000:]}"
    if proc.returncode == 0:
        assert "FITS" in proc.stdout
