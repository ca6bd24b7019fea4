"""The thin lm-eval ``LM`` the evaluation loop holds for an engine that lives elsewhere.

Importing this module imports lm-eval (the class derives from its ``LM``).
"""

from __future__ import annotations

from typing import Any


def _lm_base() -> type:
    from lm_eval.api.model import LM

    return LM


class ProxyLM(_lm_base()):  # type: ignore[misc]
    """The lm-eval ``LM`` the evaluation loop holds; every request goes to the engine process.

    ``simple_evaluate`` needs ``isinstance(lm, LM)``, the three request methods, and ``rank`` /
    ``world_size`` (the base class answers 0 and 1); chat-template attributes are asked of the
    engine when a run wants them. A request call that gets no answer within ``stall_timeout_s``
    (the loop sends requests in slices of a few seconds, harness/evaluation/journaled.py) is a
    stalled engine: it is killed, and the call raises ``EngineDied``, so the loop rebuilds it
    once and resumes the dataset from its journal.
    """

    def __init__(self, engine: Any, stall_timeout_s: float | None = None) -> None:
        super().__init__()
        self._engine = engine
        self._stall_timeout_s = stall_timeout_s or None

    def loglikelihood(self, requests: list[Any], disable_tqdm: bool = False) -> list[Any]:
        return [tuple(r) for r in self._forward("loglikelihood", requests)]

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[Any]:
        return self._forward("loglikelihood_rolling", requests)

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[Any]:
        return self._forward("generate_until", requests)

    def _forward(self, op: str, requests: list[Any]) -> list[Any]:
        if not requests:
            return []
        try:
            answers = self._engine.call(
                op, [tuple(r.args) for r in requests], timeout=self._stall_timeout_s
            )
        except TimeoutError as err:  # the stall watchdog: no answer, however long it waits
            from harness.engines.process import EngineDied

            self._engine.kill()
            raise EngineDied(
                f"the engine answered nothing for {self._stall_timeout_s:.0f}s while a dataset "
                "ran (stalled; strategy.stall_timeout_s): killed"
            ) from err
        for request, answer in zip(requests, answers, strict=True):
            self.cache_hook.add_partial(op, request.args, answer)
        return list(answers)

    @property
    def tokenizer_name(self) -> str:
        return str(self._engine.call("attr", "tokenizer_name"))

    def chat_template(self, chat_template: bool | str = False) -> str | None:
        result = self._engine.call("call", ("chat_template", (chat_template,), {}))
        return None if result is None else str(result)

    def apply_chat_template(
        self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True
    ) -> str:
        call = (
            "apply_chat_template",
            (chat_history,),
            {"add_generation_prompt": add_generation_prompt},
        )
        return str(self._engine.call("call", call))
