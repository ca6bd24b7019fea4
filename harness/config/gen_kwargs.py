"""``gen_kwargs``' keys, checked against what the engine's generation takes, before the load.

A misspelt key (``max_gen_tok``) is otherwise found only once the model has loaded and
answers its first generation request: transformers says "model_kwargs are not used", vLLM's
``SamplingParams`` raises a ``TypeError``. The keys taken are read from the installed sources
with ``ast`` (nothing is imported): lm-eval's own (``normalize_gen_kwargs``: ``until``,
``max_gen_toks`` and its aliases, ``do_sample``, ``temperature``), plus transformers'
``GenerationConfig`` attributes for the HF engine, vLLM's ``SamplingParams`` fields for vLLM.
A served model (``endpoint``) passes them to its server as they are: not checked here.
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
    (a served model, or sources not installed here)."""
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
    taker = {"hf": "transformers' GenerationConfig", "vllm": "vLLM's SamplingParams"}[engine]
    return [
        f"{where}gen_kwargs key {key!r}: neither lm-eval nor {taker} (engine {engine}) takes "
        f"it; it would fail only after the model loads.{did_you_mean(key, sorted(known))} "
        f"Fix: correct the key, e.g. {where}gen_kwargs={{max_gen_toks:256}}."
        for key in keys
        if key not in known
    ]
