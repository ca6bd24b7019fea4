"""``strategy.engine_args``: keyword arguments passed through to the engine, each checked first.

An engine's keywords are read from the installed sources with ``ast`` (nothing is imported, so
checking costs no torch or vLLM import): lm-eval's ``HFLM.__init__`` plus the
``from_pretrained`` keywords HFLM passes on for the HF engine; lm-eval's ``VLLM.__init__`` plus
vLLM's ``EngineArgs`` fields for vLLM (the same ``arg_utils.py`` the contract test reads from the
GPU release's wheel). A key the plan derives is refused with the setting that decides it: one
place decides each.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from functools import cache

from harness.config.installed_source import annotated_fields, installed_source
from harness.config.rules import PLAN_OWNED
from harness.errors import did_you_mean

FROM_PRETRAINED = (
    "attn_implementation",
    "device_map",
    "low_cpu_mem_usage",
    "quantization_config",
    "max_memory",
    "offload_folder",
    "offload_state_dict",
    "use_safetensors",
    "variant",
    "subfolder",
    "cache_dir",
    "local_files_only",
    "token",
    "tp_plan",
    "key_mapping",
)
"""``from_pretrained`` keywords (transformers' ``PreTrainedModel.from_pretrained``) that HFLM
passes on from its ``**kwargs``."""


def init_parameters(source: str, class_name: str) -> set[str]:
    """The named parameters of ``class_name.__init__`` in ``source`` (not ``self``)."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ClassDef) and node.name == class_name:
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and item.name == "__init__":
                    args = item.args
                    names = [a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)]
                    return set(names) - {"self"}
    return set()


def engine_args_fields(source: str) -> set[str]:
    """vLLM's ``EngineArgs`` fields in ``vllm/engine/arg_utils.py``'s source."""
    return annotated_fields(source, "EngineArgs")


@cache
def accepted(engine: str) -> frozenset[str] | None:
    """Every keyword the installed ``engine`` takes; None where its sources are not here."""
    if engine == "hf":
        source = installed_source("lm_eval", "models/huggingface.py")
        if source is None:
            return None
        return frozenset(init_parameters(source, "HFLM") | set(FROM_PRETRAINED))
    wrapper = installed_source("lm_eval", "models/vllm_causallms.py")
    fields = installed_source("vllm", "engine/arg_utils.py")
    if wrapper is None or fields is None:
        return None
    return frozenset(init_parameters(wrapper, "VLLM") | engine_args_fields(fields))


def unknown_problems(engine: str, engine_args: Mapping[str, object]) -> list[str]:
    """Keys of ``strategy.engine_args`` the installed engine does not take, with "Did you
    mean"; none when the engine's sources are not installed (its own preflight says so)."""
    known = accepted(engine)
    if known is None:
        return []
    names = sorted(known - set(PLAN_OWNED))
    where = {"hf": "lm-eval's HFLM nor transformers' from_pretrained", "vllm": "vLLM's EngineArgs"}
    return [
        f"strategy.engine_args.{key}: neither {where.get(engine, engine)} nor lm-eval's "
        f"wrapper takes it.{did_you_mean(key, names)} Fix: correct the key (the engine's "
        "keyword arguments, as its documentation names them)."
        for key in engine_args
        if key not in known and key not in PLAN_OWNED
    ]
