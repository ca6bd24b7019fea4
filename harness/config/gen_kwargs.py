"""``gen_kwargs``' keys, checked against what the engine's generation takes, before the load.

A misspelt key (``max_gen_tok``) is otherwise found only once the model has loaded and
answers its first generation request: transformers says "model_kwargs are not used", vLLM's
``SamplingParams`` raises a ``TypeError``. The keys taken are read from the installed sources
with ``ast`` (nothing is imported): lm-eval's own (``normalize_gen_kwargs``: ``until``,
``max_gen_toks`` and its aliases, ``do_sample``, ``temperature``), plus transformers'
``GenerationConfig`` attributes for the HF engine, vLLM's ``SamplingParams`` fields for vLLM.

A served model (``endpoint``) is asked by lm-eval's API models (``local-completions``,
``local-chat-completions``: their ``_create_payload``), which read ``until``, ``max_gen_toks``,
``max_tokens``, ``do_sample`` and ``temperature`` and put every other key into the request body
as it is. An OpenAI-compatible server ignores a body key it does not know (vLLM's logs "fields
were present in the request but ignored" on its own side), so a misspelt key would change
nothing and say nothing: the keys are checked against the OpenAI API's parameters of the
endpoint's API (completions or chat), plus the request fields of the vLLM server installed
here (its sampling extras: ``top_k``, ``min_p``, ...). lm-eval's other aliases
(``max_new_tokens``, ``max_completion_tokens`` on completions) are not read by the API models:
refused, with the close name.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from functools import cache

from harness.config.installed_source import annotated_fields, class_node, installed_source
from harness.errors import did_you_mean

LM_EVAL_KEYS = frozenset(
    {
        "until",
        "max_gen_toks",
        "max_new_tokens",
        "max_tokens",
        "max_completion_tokens",
        "do_sample",
        "temperature",
    }
)
"""What lm-eval's models read themselves (``lm_eval.models.utils.normalize_gen_kwargs``)."""


API_MODEL_KEYS = frozenset({"until", "max_gen_toks", "max_tokens", "do_sample", "temperature"})
"""What lm-eval's API models read themselves (``TemplateAPI`` subclasses' ``_create_payload``)."""

OPENAI_COMPLETIONS = frozenset(
    {
        "best_of",
        "frequency_penalty",
        "logit_bias",
        "logprobs",
        "max_tokens",
        "n",
        "presence_penalty",
        "seed",
        "stop",
        "suffix",
        "temperature",
        "top_p",
        "user",
    }
)
"""The OpenAI completions API's parameters a generation may set (``/v1/completions``)."""

OPENAI_CHAT = frozenset(
    {
        "frequency_penalty",
        "logit_bias",
        "logprobs",
        "max_completion_tokens",
        "max_tokens",
        "metadata",
        "n",
        "parallel_tool_calls",
        "presence_penalty",
        "reasoning_effort",
        "response_format",
        "seed",
        "service_tier",
        "stop",
        "store",
        "temperature",
        "tool_choice",
        "tools",
        "top_logprobs",
        "top_p",
        "user",
        "verbosity",
    }
)
"""The OpenAI chat completions API's parameters a generation may set
(``/v1/chat/completions``)."""

SENT_BY_HARNESS = frozenset({"model", "prompt", "messages", "echo", "stream", "stream_options"})
"""Body keys the API model writes itself (or that would break reading the answer)."""

VLLM_SERVER_REQUESTS = {
    "endpoint": ("entrypoints/openai/completion/protocol.py", "CompletionRequest"),
    "endpoint_chat": ("entrypoints/openai/chat_completion/protocol.py", "ChatCompletionRequest"),
}
"""Where the installed vLLM's OpenAI server declares each API's request fields."""


def endpoint_keys(engine: str) -> frozenset[str]:
    """``gen_kwargs`` keys a served model takes through lm-eval's API model: ``engine`` is
    ``endpoint`` (completions) or ``endpoint_chat``."""
    openai = OPENAI_CHAT if engine == "endpoint_chat" else OPENAI_COMPLETIONS
    relative, request = VLLM_SERVER_REQUESTS[engine]
    source = installed_source("vllm", relative)
    served = annotated_fields(source, request) if source else set()
    return frozenset((API_MODEL_KEYS | openai | served) - SENT_BY_HARNESS)


def generation_config_keys(source: str) -> set[str]:
    """The attributes ``GenerationConfig.__init__`` sets (``self.<name> = ...``)."""
    found = class_node(source, "GenerationConfig")
    init = (
        next(
            (f for f in found.body if isinstance(f, ast.FunctionDef) and f.name == "__init__"),
            None,
        )
        if found
        else None
    )
    if init is None:
        return set()
    return {
        target.attr
        for node in ast.walk(init)
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Attribute)
        and isinstance(target.value, ast.Name)
        and target.value.id == "self"
    }


def sampling_params_fields(source: str) -> set[str]:
    """vLLM's ``SamplingParams`` fields (its annotated class attributes)."""
    return annotated_fields(source, "SamplingParams")


@cache
def accepted(engine: str) -> frozenset[str] | None:
    """Every ``gen_kwargs`` key the installed ``engine`` takes; None where it is not checked
    (sources not installed here)."""
    if engine in VLLM_SERVER_REQUESTS:
        return frozenset(k for k in endpoint_keys(engine) if not k.startswith("_"))
    if engine == "hf":
        source = installed_source("transformers", "generation/configuration_utils.py")
        keys = generation_config_keys(source) if source else set()
    elif engine == "vllm":
        source = installed_source("vllm", "sampling_params.py")
        keys = sampling_params_fields(source) if source else set()
    else:
        return None
    if not keys:
        return None
    return frozenset(LM_EVAL_KEYS | {k for k in keys if not k.startswith("_")})


def gen_kwargs_key_problems(engine: str, where: str, keys: Iterable[str]) -> list[str]:
    """Each key of ``<where>gen_kwargs`` the engine's generation does not take, with the
    closest names and the fix."""
    known = accepted(engine)
    if known is None:
        return []
    taker, when = {
        "hf": ("transformers' GenerationConfig (engine hf)", "fail only after the model loads"),
        "vllm": ("vLLM's SamplingParams (engine vllm)", "fail only after the model loads"),
        "endpoint": (
            "the OpenAI completions API (strategy=endpoint)",
            "be sent to the server, which ignores a key it does not know",
        ),
        "endpoint_chat": (
            "the OpenAI chat API (strategy=endpoint, api=chat)",
            "be sent to the server, which ignores a key it does not know",
        ),
    }[engine]
    return [
        f"{where}gen_kwargs key {key!r}: neither lm-eval nor {taker} takes "
        f"it; it would {when}.{did_you_mean(key, sorted(known))} "
        f"Fix: correct the key, e.g. {where}gen_kwargs={{max_gen_toks:256}}."
        for key in keys
        if key not in known
    ]
