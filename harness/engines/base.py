"""The engine contract: what the evaluation loop needs from any way of serving a model."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


class Engine(Protocol):
    """A model loaded once and kept resident while every dataset is evaluated."""

    lm: Any
    """The lm-eval ``LM`` instance handed to ``lm_eval.simple_evaluate``."""

    def describe(self) -> dict[str, Any]:
        """Facts about the loaded engine (kind, device, dtype, parallel sizes) for the record."""
        ...

    def count_tokens(self, texts: Sequence[str]) -> int:
        """Tokens in ``texts`` under the model's tokenizer, without special tokens."""
        ...

    def close(self) -> None:
        """Free the model (and its device memory); the engine is unusable afterwards."""
        ...


@dataclass
class RequestMeter:
    """Counts requests and tokens one dataset sends to the engine (its ``JournaledLM`` records
    each slice it sends)."""

    requests: int = 0
    """Requests served since the last reset."""
    prompt_tokens: int = 0
    """Tokens the model read (contexts and scored continuations)."""
    generated_tokens: int = 0
    """Tokens the model produced (generate_until outputs)."""
    by_type: dict[str, int] = field(default_factory=dict)
    """Requests per lm-eval request type."""

    def reset(self) -> None:
        self.requests = self.prompt_tokens = self.generated_tokens = 0
        self.by_type = {}

    def record(
        self,
        request_type: str,
        requests: Sequence[Any],
        outputs: Sequence[Any],
        count_tokens: Callable[[Sequence[str]], int],
    ) -> None:
        self.requests += len(requests)
        self.by_type[request_type] = self.by_type.get(request_type, 0) + len(requests)
        if request_type == "generate_until":
            self.prompt_tokens += count_tokens([r.args[0] for r in requests])
            self.generated_tokens += count_tokens([o for o in outputs if isinstance(o, str)])
        else:
            # loglikelihood args are (context, continuation); rolling args are (text,).
            self.prompt_tokens += count_tokens([a for r in requests for a in r.args[:2]])


def recordable(value: Any) -> Any:
    """A value read back from an engine as summary.json can hold it: plain as it is, else its
    text (an enum, a config object)."""
    return value if isinstance(value, bool | int | float | str | type(None)) else str(value)


def count_with(tokenizer: Any, texts: Sequence[str]) -> int:
    """Tokens in ``texts`` under a Hugging Face tokenizer, without special tokens (what every
    engine's ``count_tokens`` reports, so throughput compares across engines)."""
    if not texts:
        return 0
    return sum(len(ids) for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"])
