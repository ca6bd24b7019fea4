"""The one request path, with stand-in engines (no model): every slice a dataset sends goes through
the gate to ``engine.answer``, never to ``engine.lm``'s request methods; a gate for one dataset
answers in the caller's thread; a gate for several merges their slices and hands each its own
``Answered`` part; the dataset's meter counts each part's tokens; an engine that lives outside
this process is recognised by type, and a dataset it died in (``EngineDied``) is retried once on
the rebuilt engine.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import pytest

from harness.engines.base import Answered, EngineDied, RemoteEngine, RequestMeter
from harness.evaluation.gate import EngineGate, _Slice
from harness.record.journal import RequestJournal


@dataclass
class Req:
    args: tuple[Any, ...]


class NoRequestsLM:
    """What lm-eval reads of the model besides requests; its request methods must not be called."""

    tokenizer_name = "stand-in"
    rank = 0

    def loglikelihood(self, requests: list[Any], disable_tqdm: bool = False) -> list[Any]:
        raise AssertionError("a request went to engine.lm, not engine.answer")

    generate_until = loglikelihood_rolling = loglikelihood


class InProcess:
    """An engine in this process: answers with its tokens (one a character), records each call."""

    def __init__(self) -> None:
        self.lm = NoRequestsLM()
        self.calls: list[tuple[str, int, str]] = []
        self.hold: threading.Event | None = None
        """When set to an event, the first call waits for it (slices queue up meanwhile)."""

    def answer(self, op: str, requests: Any) -> Answered:
        self.calls.append((op, len(requests), threading.current_thread().name))
        if self.hold is not None:
            hold, self.hold = self.hold, None
            assert hold.wait(10)
        if any(r.args[0] == "raise" for r in requests):
            raise ValueError("asked to raise")
        answers = [(-float(len(r.args[1])), True) for r in requests]
        return Answered(answers, [len("".join(r.args)) for r in requests], [0] * len(requests))

    def describe(self) -> dict[str, Any]:
        return {"kind": "in-process stand-in"}

    def close(self) -> None:
        pass


class Remote(InProcess):
    """An engine outside this process: it dies in its first ``died`` calls, and ``revive``
    rebuilds it."""

    def __init__(self, died: int = 0) -> None:
        super().__init__()
        self.died, self.revived, self.builds = died, 0, 1

    def answer(self, op: str, requests: Any) -> Answered:
        if self.died:
            self.died -= 1
            self.dead = True
            raise EngineDied("the stand-in died")
        return super().answer(op, requests)

    def call(self, op: str, payload: Any = None, timeout: float | None = None) -> Any:
        return None

    def check(self, timeout: float = 60.0) -> None:
        if getattr(self, "dead", False):
            raise EngineDied("dead")

    def revive(self, rebuild: bool = True) -> bool:
        self.revived += 1
        if not getattr(self, "dead", False):
            return False
        if not rebuild:
            raise EngineDied("dead, and no rebuild left")
        self.dead, self.builds = False, self.builds + 1
        return True

    def kill(self) -> None:
        self.dead = True


def requests(*contexts: str) -> list[Req]:
    return [Req((c, f" {c[::-1]}")) for c in contexts]


def test_remote_engines_are_recognised_by_type():
    assert isinstance(Remote(), RemoteEngine)
    assert not isinstance(InProcess(), RemoteEngine)


def test_a_gate_for_one_dataset_answers_in_the_callers_thread():
    engine = InProcess()
    gate = EngineGate(engine, at_once=1)
    got = gate.send("loglikelihood", requests("ab", "cde"))
    assert got.answers == [(-3.0, True), (-4.0, True)] and got.prompt_tokens == [5, 7]
    assert engine.calls == [("loglikelihood", 2, threading.current_thread().name)]
    assert not [t for t in threading.enumerate() if t.name == "engine-gate"]


def test_a_gate_for_several_datasets_merges_their_slices_and_hands_each_its_part():
    engine = InProcess()
    hold = engine.hold = threading.Event()
    gate = EngineGate(engine, at_once=3)
    got: dict[str, Answered] = {}

    def send(name: str, contexts: tuple[str, ...]) -> None:
        got[name] = gate.send("loglikelihood", requests(*contexts))

    first = threading.Thread(target=send, args=("a", ("a",)))
    first.start()
    assert _wait(lambda: len(engine.calls) == 1)  # the engine holds the first call
    others = [
        threading.Thread(target=send, args=("b", ("bb", "bbb"))),
        threading.Thread(target=send, args=("c", ("cccc",))),
    ]
    for thread in others:
        thread.start()
    assert _wait(lambda: len(gate._queue) == 2)  # both queued behind the first call
    hold.set()
    for thread in [first, *others]:
        thread.join(10)
    gate.close()
    assert [(op, n) for op, n, _ in engine.calls] == [("loglikelihood", 1), ("loglikelihood", 3)]
    assert {t for _, _, t in engine.calls} == {"engine-gate"}
    assert got["b"].answers == [(-3.0, True), (-4.0, True)] and got["b"].prompt_tokens == [5, 7]
    assert got["c"].answers == [(-5.0, True)] and got["c"].prompt_tokens == [9]


def test_one_datasets_error_stays_its_own_and_a_dead_engine_fails_every_slice():
    gate = EngineGate(InProcess(), at_once=2)
    good, bad = _Slice("loglikelihood", requests("ok")), _Slice("loglikelihood", requests("raise"))
    gate._answer("loglikelihood", [good, bad])  # merged, it raised: asked again one by one
    assert good.answered is not None and good.answered.answers == [(-3.0, True)]
    assert isinstance(bad.error, ValueError)

    dead = EngineGate(Remote(died=1), at_once=2)
    slices = [_Slice("loglikelihood", requests(c)) for c in ("x", "y")]
    dead._answer("loglikelihood", slices)
    assert all(isinstance(s.error, EngineDied) for s in slices)


def test_the_journaled_lm_meters_each_slice_and_answers_from_its_journal(tmp_path):
    from harness.evaluation.journaled import FIRST_SLICE, JournaledLM

    engine = InProcess()
    sent = requests(*(f"q{i}" for i in range(FIRST_SLICE + 10)))
    meter = RequestMeter()
    lm = JournaledLM(engine, RequestJournal(tmp_path, "d", "fp"), {"pid": 1}, meter=meter)
    first = lm.loglikelihood(sent)
    lm._journal.close()
    assert [n for _, n, _ in engine.calls] == [FIRST_SLICE, 10]  # two slices, two parts metered
    assert meter.requests == len(sent) and meter.by_type == {"loglikelihood": len(sent)}
    assert meter.prompt_tokens == sum(len("".join(r.args)) for r in sent)
    assert meter.generated_tokens == 0 and lm.tokenizer_name == "stand-in"

    again = JournaledLM(engine, RequestJournal(tmp_path, "d", "fp"), {"pid": 2})
    assert again.loglikelihood(sent) == first and again.from_journal == len(sent)
    assert len(engine.calls) == 2 and again.meter.requests == 0  # nothing asked again


@pytest.fixture
def evaluation(compose_cfg, tmp_path, monkeypatch):
    """An ``Evaluation`` of one dataset (arith_mc) whose lm-eval call is replaced by one that
    sends three loglikelihood requests through the dataset's LM."""
    from harness.config.schema import to_run_config
    from harness.evaluation import dataset as one
    from harness.planning.auto import plan_run
    from harness.record.rundir import RunDirectory
    from harness.record.store import ResultStore
    from harness.tracking import Tracker

    def fake_lm_eval(lm: Any, prepared: Any, run: Any) -> dict[str, Any]:
        answers = lm.loglikelihood(requests("a", "b", "c"))
        return {"results": {"arith_mc": {"acc,none": sum(a[0] for a in answers) / -6}}}

    monkeypatch.setattr(one, "run_lm_eval", fake_lm_eval)
    run = to_run_config(compose_cfg("dataset=[arith_mc]", "tracking=none"))
    item = one.Pending(SimpleNamespace(config=run.dataset["arith_mc"]), {}, "fp", None, "jfp")

    def make(engine: Any) -> tuple[Any, Any]:
        gate = EngineGate(engine)
        (tmp_path / "run").mkdir(exist_ok=True)
        ev = one.Evaluation(
            engine, gate, run, plan_run(run), RunDirectory(tmp_path / "run"),
            ResultStore(tmp_path / "store"), Tracker(run.tracking), lambda e, **f: None, total=1,
        )  # fmt: skip
        return one.evaluate_dataset(ev, 1, "arith_mc", item), tmp_path / "run"

    return make


def test_a_dataset_the_remote_engine_died_in_is_retried_once_on_the_rebuilt_one(evaluation):
    engine = Remote(died=1)
    outcome, run_dir = evaluation(engine)
    assert outcome.status == "ok" and outcome.metrics == {"acc": 1.0}, outcome
    assert engine.builds == 2 and engine.revived == 2  # checked before each try
    assert outcome.requests == 3 and outcome.prompt_tokens == 9
    assert not list(run_dir.glob("results/*.error.json"))  # the retry's success is the record


def test_a_remote_engine_that_dies_twice_fails_the_dataset_with_engine_died(evaluation):
    outcome, run_dir = evaluation(Remote(died=2))
    assert outcome.status == "failed" and outcome.error_type == "EngineDied", outcome
    assert (run_dir / "results" / "arith_mc.error.json").is_file()


def test_an_engine_in_this_process_is_not_checked(evaluation):
    engine = InProcess()
    outcome, _ = evaluation(engine)
    assert outcome.status == "ok" and [n for _, n, _ in engine.calls] == [3]


def _wait(condition: Any, timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.01)
    return False
