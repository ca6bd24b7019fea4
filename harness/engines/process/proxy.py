"""The thin lm-eval ``LM`` an engine that lives elsewhere shows: its attributes, and its request
methods for whoever calls them on the ``LM`` (the evaluation loop asks ``engine.answer``).

Importing this module imports lm-eval (the class derives from its ``LM``).
"""

from __future__ import annotations

from typing import Any


def _lm_base() -> type:
    from lm_eval.api.model import LM

    return LM


class ProxyLM(_lm_base()):  # type: ignore[misc]
    """The lm-eval ``LM`` of an engine in its own process or on Ray replicas.

    ``simple_evaluate`` needs ``isinstance(lm, LM)``, the three request methods, and ``rank`` /
    ``world_size`` (the base class answers 0 and 1); chat-template attributes are asked of the
    engine when a run wants them. A request method is one ``engine.answer`` (one round trip, under
    the engine's stall watchdog).

    Args:
        engine: the remote engine (``answer`` and ``call``).
    """

    def __init__(self, engine: Any) -> None:
        super().__init__()
        self._engine = engine

    def loglikelihood(self, requests: list[Any], disable_tqdm: bool = False) -> list[Any]:
        return [tuple(r) for r in self._forward("loglikelihood", requests)]

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[Any]:
        return self._forward("loglikelihood_rolling", requests)

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[Any]:
        return self._forward("generate_until", requests)

    def _forward(self, op: str, requests: list[Any]) -> list[Any]:
        answers = list(self._engine.answer(op, requests).answers)
        for request, answer in zip(requests, answers, strict=True):
            self.cache_hook.add_partial(op, request.args, answer)
        return answers

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
