"""Resume inside a dataset: the request journal answers what a killed run had finished, and
nothing it cannot vouch for.

A dataset of 12,000 loglikelihood requests (3,000 generated arithmetic questions, four choices
each) with the bundled model, so that a kill lands inside it: the journal is written in slices,
the first of 64 requests, the next sized to take about strategy.journal_slice_s (0.5 s here).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.record.journal import RequestJournal, _line
from tests.big_task import REQUESTS, journaled, write_big_task
from tests.conftest import json_lines, offline_env, run_harness
from tests.processes import descendants, is_live, wait_until


@pytest.fixture(scope="module")
def big_task(tmp_path_factory) -> Path:
    return write_big_task(tmp_path_factory.mktemp("big_task"))


def args(task: Path, out: Path, *more: str) -> list[str]:
    return [
        f"outputs_root={out}",
        "tracking=none",
        f"task_paths=[{task}]",
        f"allowed_roots=[{task}]",
        "dataset=[big_mc]",
        "strategy.journal_slice_s=0.5",  # a dozen slices or more: a kill lands inside
        *more,
    ]


def summary_of(out: Path) -> dict:
    (run_dir,) = sorted((out / "runs").iterdir())[-1:]
    return json.loads((run_dir / "summary.json").read_text())


def journal_files(out: Path) -> list[Path]:
    return sorted(out.glob("store/*/journal/*.jsonl"))


def records(path: Path) -> list[dict]:
    """The journal's record lines that parse (read here without harness's reader)."""
    return [line for line in json_lines(path) if "k" in line]


@pytest.fixture(scope="module")
def uninterrupted(big_task, tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("uninterrupted")
    proc = run_harness(args(big_task, tmp / "out"), tmp)
    assert proc.returncode == 0, proc.stderr[-3000:]
    outcome = summary_of(tmp / "out")["datasets"]["big_mc"]
    assert outcome["requests"] == REQUESTS and outcome["requests_journaled"] == 0
    assert journal_files(tmp / "out") == [], "a stored dataset's journal is deleted"
    return outcome


def start(cmd_args: list[str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "harness", *cmd_args],
        cwd=cwd, env=offline_env(cwd), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, start_new_session=True,
    )  # fmt: skip


def kill_when_journaled(proc: subprocess.Popen[str], out: Path, at_least: int) -> int:
    """SIGKILL the run (its whole group) once the journal holds ``at_least`` records."""
    reached = wait_until(lambda: journaled(out) >= at_least, timeout=300, interval=0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    assert reached, f"the journal never reached {at_least} records"
    return journaled(out)


def rerun(task: Path, out: Path, cwd: Path, *more: str) -> tuple[dict, str]:
    proc = run_harness(args(task, out, *more), cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return summary_of(out)["datasets"]["big_mc"], proc.stdout


@pytest.mark.slow
@pytest.mark.parametrize("at_least", [1, 4000])  # in the first slice's wake, or past a third
def test_a_run_killed_inside_a_dataset_resumes_inside_it(
    big_task, uninterrupted, tmp_path, at_least
):
    out = tmp_path / "out"
    kept = kill_when_journaled(start(args(big_task, out), tmp_path), out, at_least)
    assert 0 < kept < REQUESTS, kept

    outcome, stdout = rerun(big_task, out, tmp_path)
    # Counted at the engine: exactly what was not journaled is asked again.
    assert outcome["requests_journaled"] == kept
    assert outcome["requests"] == REQUESTS - kept
    assert outcome["metrics"] == uninterrupted["metrics"]
    assert f"{kept} of {REQUESTS} requests from the journal" in stdout
    (source,) = outcome["journal_sources"]
    assert source["records"] == kept and source["pid"] > 0 and source["host"]
    assert journal_files(out) == []  # stored now: the journal is gone


@pytest.mark.slow
def test_what_the_journal_cannot_vouch_for_is_asked_again(big_task, uninterrupted, tmp_path):
    out = tmp_path / "out"
    kept = kill_when_journaled(start(args(big_task, out), tmp_path), out, 4000)
    (path,) = journal_files(out)
    lines = path.read_bytes().splitlines(keepends=True)
    record_at = [i for i, raw in enumerate(lines) if b'"k"' in raw]
    # A flipped byte in one record's answer: its checksum fails.
    flipped = record_at[10]
    lines[flipped] = lines[flipped].replace(b"-", b"+", 1)
    # Records of another fingerprint, with answers that would change every question's verdict.
    session = json.loads(lines[0])
    session.pop("s")
    stolen = [json.loads(lines[i]) for i in record_at[20:120]]
    other = [_line({**session, "fingerprint": "0" * 20}) + "\n"]
    other += [_line({"k": r["k"], "a": [0.0, True]}) + "\n" for r in stolen]
    # The last record torn in half, as a kill mid-write leaves it.
    torn = lines[record_at[-1]]
    lines[record_at[-1]] = torn[: len(torn) // 2]
    lines = lines[: record_at[-1]] + [line.encode() for line in other] + [lines[record_at[-1]]]
    path.write_bytes(b"".join(lines))
    intact = kept - 2  # read after the originals, the wrong answers would win: they are not read

    outcome, _ = rerun(big_task, out, tmp_path)
    assert outcome["metrics"] == uninterrupted["metrics"]
    assert outcome["requests_journaled"] == intact
    assert outcome["requests"] == REQUESTS - intact


@pytest.mark.slow
def test_a_rerun_or_another_deployment_never_reads_the_journal(big_task, tmp_path):
    out = tmp_path / "out"
    kill_when_journaled(start(args(big_task, out), tmp_path), out, 1)
    # Another batch size may move the logprobs: another journal.
    outcome, _ = rerun(big_task, out, tmp_path, "strategy.batch_size=4")
    assert outcome["requests_journaled"] == 0 and outcome["requests"] == REQUESTS
    assert len(journal_files(out)) == 1  # the other deployment's journal is left as it was
    # rerun=true evaluates from scratch and deletes what an earlier run journaled.
    outcome, _ = rerun(big_task, out, tmp_path, "rerun=true")
    assert outcome["requests_journaled"] == 0 and outcome["requests"] == REQUESTS
    assert journal_files(out) == []


@pytest.mark.slow
def test_an_engine_killed_mid_slice_is_rebuilt_and_resumed_from_the_journal(
    big_task, uninterrupted, tmp_path
):
    """HF in a process of its own: the engine (not the harness) is SIGKILLed inside a slice; the
    slice it died in journals nothing, and the retry on the rebuilt engine asks only the rest."""
    out = tmp_path / "out"
    proc = start(args(big_task, out, "strategy.replica_backend=process"), tmp_path)
    assert wait_until(lambda: journaled(out) >= 4000, timeout=300, interval=0.02)
    (engine,) = [p for p, cmd in descendants(proc.pid).items() if "harness::engine" in cmd]
    before = journaled(out)
    os.kill(engine, signal.SIGKILL)
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr[-3000:]
    assert "rebuilding it and retrying big_mc once" in stdout
    outcome = summary_of(out)["datasets"]["big_mc"]
    assert outcome["metrics"] == uninterrupted["metrics"]
    assert outcome["requests_journaled"] >= before  # what was journaled before the kill
    assert outcome["requests"] + outcome["requests_journaled"] == REQUESTS


def test_a_journal_reads_back_only_what_it_can_check(tmp_path):
    journal = RequestJournal(tmp_path, "d", "fp1")
    journal.open({"pid": 1})
    journal.append([("a", [-1.5, True]), ("b", "text"), ("c", -2.0)])
    journal.close()
    with journal.path.open("ab") as handle:
        handle.write(b'{"k":"d","a":1.0,"s":"tor')  # a killed writer's half line
    contents = RequestJournal(tmp_path, "d", "fp1").read()
    assert contents.answers == {"a": [-1.5, True], "b": "text", "c": -2.0}
    assert contents.skipped == 1 and contents.sources == [{"pid": 1, "records": 3}]
    assert RequestJournal(tmp_path, "d", "fp2").read().answers == {}  # another fingerprint's

    again = RequestJournal(tmp_path, "d", "fp1")
    again.open({"pid": 2})  # the torn line is ended first: the next record is whole
    again.append([("e", 0.5)])
    again.close()
    contents = RequestJournal(tmp_path, "d", "fp1").read()
    assert contents.answers["e"] == 0.5 and contents.skipped == 1
    assert [s["records"] for s in contents.sources] == [3, 1]
    again.delete()
    assert not again.path.exists()


@pytest.mark.slow
def test_a_stalled_engine_is_killed_rebuilt_and_the_dataset_resumed(
    big_task, uninterrupted, tmp_path
):
    """The engine's process stopped (SIGSTOP): alive, answering nothing, as a vLLM engine that
    admits no requests. The watchdog kills it within strategy.stall_timeout_s, and the retry
    on the rebuilt engine resumes from the journal."""
    out = tmp_path / "out"
    more = ("strategy.replica_backend=process", "strategy.stall_timeout_s=20")
    proc = start(args(big_task, out, *more), tmp_path)
    assert wait_until(lambda: journaled(out) >= 4000, timeout=300, interval=0.02)
    (engine,) = [p for p, cmd in descendants(proc.pid).items() if "harness::engine" in cmd]
    before = journaled(out)
    os.kill(engine, signal.SIGSTOP)
    stopped = time.monotonic()
    assert wait_until(lambda: not is_live(engine), timeout=60, interval=0.1), "never killed"
    noticed = time.monotonic() - stopped
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr[-3000:]
    assert "stalled; strategy.stall_timeout_s" in stderr, stderr[-3000:]
    assert "rebuilding it and retrying big_mc once" in stdout
    outcome = summary_of(out)["datasets"]["big_mc"]
    assert outcome["metrics"] == uninterrupted["metrics"]
    assert outcome["requests_journaled"] >= before
    assert outcome["requests"] + outcome["requests_journaled"] == REQUESTS
    print(f"stall noticed and the engine killed {noticed:.1f}s after SIGSTOP (limit 20s)")
    assert noticed < 20 + 5  # the limit from the slice's start, and killing it


def test_the_quick_record_line_is_the_generic_one():
    """loglikelihood's (float, bool) answers are written by hand; a reader sees no difference."""
    from harness.record.journal import _record_line

    for answer in [(-1.2345678901234, True), (0.0, False), (-1e-300, True), (-5e9, False)]:
        assert _record_line("ab" * 16, answer) == _line({"k": "ab" * 16, "a": answer})
    for answer in [(float("-inf"), False), "text", -2.5, [1.0, True]]:  # the generic way
        assert _record_line("k.3", answer) == _line({"k": "k.3", "a": answer})


@pytest.mark.ray
@pytest.mark.slow
def test_two_replicas_killed_resume_at_two_and_start_over_at_one(big_task, uninterrupted, tmp_path):
    """Two HF replicas as Ray actors, the whole run SIGKILLed mid-dataset. The data-parallel size
    can move logprobs (each replica batches its own share of the requests), so the journal's key
    holds it as the result's does: resumed at one replica, the dataset starts over and the two
    replicas' journal is left as it was; resumed at two, that journal answers what it holds."""
    from tests.processes import Watcher, live

    out = tmp_path / "out"
    dp = ("strategy=dp", "strategy.engine=hf")
    proc = start(args(big_task, out, *dp), tmp_path)
    watcher = Watcher(proc.pid)
    try:
        kept = kill_when_journaled(proc, out, 4000)
    finally:
        seen = watcher.stop()
        for pid in live(seen):  # Ray's processes outlive a SIGKILLed driver for a while
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    assert 0 < kept < REQUESTS
    (two_replicas,) = journal_files(out)

    one, _ = rerun(big_task, out, tmp_path, *dp, "strategy.data_parallel_size=1")
    assert one["requests_journaled"] == 0 and one["requests"] == REQUESTS
    assert one["metrics"] == uninterrupted["metrics"]
    assert journal_files(out) == [two_replicas]  # not read, not deleted

    two, _ = rerun(big_task, out, tmp_path, *dp)
    assert two["metrics"] == uninterrupted["metrics"]
    assert two["requests_journaled"] == kept
    assert two["requests"] == REQUESTS - kept
    assert [s["data_parallel_size"] for s in two["journal_sources"]] == [2]
    assert journal_files(out) == []


@pytest.mark.vllm
@pytest.mark.slow
def test_vllm_killed_inside_a_dataset_resumes_inside_it(big_task, uninterrupted, tmp_path):
    """vLLM (the CPU build) in its own process: the whole run SIGKILLed mid-dataset, then the
    same command: only what was not journaled goes to vLLM, and the metrics are the HF engine's
    uninterrupted ones (vLLM's logprobs differ from HF's by about 1e-6, far below the gaps
    between this model's choices: tests/engines/test_vllm.py)."""
    out = tmp_path / "out"
    vllm = ("strategy=vllm",)
    kept = kill_when_journaled(start(args(big_task, out, *vllm), tmp_path), out, 2000)
    assert 0 < kept < REQUESTS, kept
    outcome, stdout = rerun(big_task, out, tmp_path, *vllm)
    assert outcome["requests_journaled"] == kept
    assert outcome["requests"] == REQUESTS - kept
    assert outcome["metrics"] == uninterrupted["metrics"]
    assert f"{kept} of {REQUESTS} requests from the journal" in stdout
