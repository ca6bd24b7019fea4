"""A stand-in engine for the process tests: no model, but processes of its own like vLLM's.

``FakeEngine`` answers lm-eval's three request methods deterministically (its tokens are
characters) and, like a vLLM ``LLM``, starts helper processes (spawned, like vLLM's EngineCore)
that ignore SIGTERM and would outlive their parent if nothing killed them.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Sequence
from typing import Any

from harness.engines.base import Answered, answer_with


def _helper() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # only SIGKILL ends it: the worst case
    while True:
        time.sleep(1)


class FakeLM:
    """lm-eval's request methods over ``args`` tuples, with answers a test can predict."""

    def loglikelihood(self, requests: list[Any], disable_tqdm: bool = False) -> list[Any]:
        return [(-float(len(cont)), len(ctx) % 2 == 0) for ctx, cont in (r.args for r in requests)]

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[Any]:
        return [-float(len(r.args[0])) for r in requests]

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[Any]:
        if any(r.args[0] == "raise" for r in requests):
            raise ValueError("asked to raise")
        if any(r.args[0] == "die" for r in requests):
            os._exit(3)
        if any(r.args[0] == "hang" for r in requests):  # a stalled engine: alive, no answer
            time.sleep(600)
        for r in requests:  # a healthy engine's slow call: "sleep:<seconds>"
            if str(r.args[0]).startswith("sleep:"):
                time.sleep(float(r.args[0].split(":")[1]))
        return [r.args[0][::-1] for r in requests]

    tokenizer_name = "fake-tokenizer"


class FakeEngine:
    def __init__(self, helpers: int = 1, fail: bool = False) -> None:
        if fail:
            raise RuntimeError("cannot build the fake engine")
        ctx = multiprocessing.get_context("spawn")
        self.helpers = [ctx.Process(target=_helper, daemon=False) for _ in range(helpers)]
        for proc in self.helpers:
            proc.start()
        self.lm = FakeLM()

    def describe(self) -> dict[str, Any]:
        return {"kind": "fake", "pid": os.getpid(), "helpers": [p.pid for p in self.helpers]}

    def answer(self, op: str, requests: Sequence[Any]) -> Answered:
        return answer_with(self.lm, op, requests, lambda texts: [len(t) for t in texts])

    def close(self) -> None:
        for proc in self.helpers:
            proc.kill()
            proc.join()


if __name__ == "__main__":  # the "harness process" of the SIGKILL test: build, report, wait
    from harness.engines.process.engine import EngineProcess

    engine = EngineProcess("tests.fake_engine:FakeEngine", int(sys.argv[1]))
    print(engine.pid, *engine.describe()["helpers"], flush=True)
    time.sleep(600)
