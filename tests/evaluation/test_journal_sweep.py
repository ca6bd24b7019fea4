"""Request journals do not leak (issue #35): once a dataset's result is stored, its journals no
result can use are removed and the run says so; a fresh journal of another setting, which the
crashed run of that setting resumes from, is kept."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from harness.evaluation.fingerprint import fingerprint, journal_key
from harness.evaluation.journal_sweep import removal_line, sweep_journals
from harness.record.journal import KEEP_DAYS
from harness.record.store import ResultStore
from tests.conftest import json_lines, run_harness

DAY_S = 86400.0


def key_of(batch_size: object, bootstrap_iters: int = 100) -> dict:
    """A dataset's key as fingerprint.py writes it, in the parts that matter here."""
    deployment = {"engine": "hf", "batch_size": batch_size}
    return {"deployment": deployment, "bootstrap_iters": bootstrap_iters, "task": {"name": "t"}}


def journal(store: ResultStore, dataset: str, key: dict, age_days: float = 0.0) -> Path:
    path = store.journal(dataset, fingerprint(journal_key(key))).path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('{"k":"x","a":[0.0,true]}\n')
    then = time.time() - age_days * DAY_S
    os.utime(path, (then, then))
    return path


def test_journals_no_result_can_use_go_and_a_resumable_one_stays(tmp_path):
    store = ResultStore(tmp_path / "store")
    stored = key_of(32)
    store.save("ds", fingerprint(stored), stored, {}, {"results": {}})
    # of the stored setting, by another bootstrap_iters: its answers are all in the result
    complete = journal(store, "ds", key_of(32, bootstrap_iters=0), age_days=1)
    fresh = journal(store, "ds", key_of(8), age_days=KEEP_DAYS - 1)  # a crashed run's: kept
    expired = journal(store, "ds", key_of(4), age_days=KEEP_DAYS + 1)
    other_dataset = journal(store, "ds_2", key_of(32), age_days=KEEP_DAYS + 1)
    prefix = journal(store, "d", key_of(32), age_days=KEEP_DAYS + 1)  # "d" is not "ds"

    removed, kept = sweep_journals(store, "ds")

    assert {(r.file, r.reason) for r in removed} == {
        (complete.name, "complete"),
        (expired.name, "expired"),
    }
    assert [k.path for k in kept] == [fresh]
    assert fresh.exists() and other_dataset.exists() and prefix.exists()
    assert not complete.exists() and not expired.exists()
    line = removal_line("ds", removed)
    assert line.startswith("ds: removed 2 request journal(s) no result can use")
    assert "in a stored result" in line and f"for {KEEP_DAYS:g} days" in line


def test_how_long_another_settings_journal_is_kept_is_a_setting(tmp_path, compose_cfg):
    """``journal_keep_days`` (14 by default, from conf/config.yaml) decides what expired means;
    a negative count is refused before anything loads, as typed."""
    from harness.config.schema import to_run_config
    from harness.config.validate import config_problems

    assert to_run_config(compose_cfg()).journal_keep_days == KEEP_DAYS == 14
    store = ResultStore(tmp_path / "store")
    old = journal(store, "ds", key_of(4), age_days=3)
    assert sweep_journals(store, "ds", keep_days=KEEP_DAYS)[0] == [] and old.exists()
    removed, _ = sweep_journals(store, "ds", keep_days=2)
    assert [(r.file, r.reason) for r in removed] == [(old.name, "expired")]
    assert "no run wrote for 2 days (journal_keep_days)" in removal_line("ds", removed, 2)
    run = to_run_config(compose_cfg("journal_keep_days=-1"))
    (problem,) = config_problems(run, will_run=False)
    assert problem.startswith("journal_keep_days=-1: must be 0 or more days. Fix:"), problem


def test_a_store_without_journals_or_results_sweeps_nothing(tmp_path):
    store = ResultStore(tmp_path / "store")
    assert sweep_journals(store, "ds") == ([], [])
    fresh = journal(store, "ds", key_of(8))
    (store.root / "ds-notafingerprint.json").write_text("{}")  # not a record: read past
    assert sweep_journals(store, "ds")[0] == [] and fresh.exists()


@pytest.mark.slow  # loads the bundled model
def test_storing_a_result_removes_the_journals_no_result_can_use_and_says_so(tmp_path):
    """A run of arith_mc beside an old journal of another batch size and a fresh one: the old
    one goes (a console line, a ``journals_removed`` event), the fresh one stays. How old is
    old is the run's ``journal_keep_days`` (3 here: the 4-day journal goes, the default 14
    would keep it)."""
    out = tmp_path / "out"
    store = ResultStore.of_model(out, "tiny_char")
    old = journal(store, "arith_mc", key_of(4), age_days=4)
    fresh = journal(store, "arith_mc", key_of(8), age_days=1)
    run_dir = tmp_path / "run"
    proc = run_harness(
        [
            "dataset=[arith_mc]",
            "dataset.arith_mc.limit=20",
            "journal_keep_days=3",
            "tracking=none",
            f"outputs_root={out}",
            f"output_dir={run_dir}",
        ],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert not old.exists() and fresh.exists()
    assert sorted(p.name for p in store.root.glob("journal/*")) == [fresh.name]
    assert "arith_mc: removed 1 request journal(s) no result can use" in proc.stdout
    assert "no run wrote for 3 days (journal_keep_days)" in proc.stdout
    events = [e for e in json_lines(run_dir / "events.jsonl") if e["event"] == "journals_removed"]
    (event,) = events
    assert event["dataset"] == "arith_mc"
    assert event["journals"] == [{"file": old.name, "reason": "expired", "bytes": 25}]
