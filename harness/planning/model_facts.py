"""The facts of the model a run really loads: from its checkpoint, never silently from another.

``model=hf model.pretrained=<id or folder>`` reads every figure from the checkpoint. A registry
model (``model=falcon_40b``) plans from its YAML with no network; when its checkpoint's
config.json is on this machine and disagrees, or when ``model.pretrained`` points elsewhere, the
checkpoint's facts are taken and the plan says which figures changed. The run's name then follows
the checkpoint too, so results of a fine-tune are never filed under the base model's name.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from harness.config.schema import COUNTED_FACTS, DType, ModelConfig, name_of
from harness.errors import ConfigError
from harness.paths import CONF_DIR, resolve_project_path
from harness.planning.checkpoint import (
    CONFIG,
    CONFIG_DTYPES,
    Checkpoint,
    CheckpointFacts,
    cached_snapshot,
    check_tokenizer,
    indexed_params,
    is_local,
    locate,
    read_json,
    tensor_params,
)
from harness.planning.location import locate_pretrained

ARCHITECTURE_FACTS = (*COUNTED_FACTS, "dtype")
"""Facts a checkpoint states exactly; a registry figure that differs from one is wrong."""
PARAMS_TOLERANCE = 0.02
"""Parameter counts agree within 2%: conventions differ (tied embeddings, buffers)."""
FAMILY_CONTEXT = {"falcon": 2048, "RefinedWeb": 2048, "RefinedWebModel": 2048}
"""Context windows of families whose config.json may omit it (transformers' own default)."""
_KEYS = {
    "num_layers": ("num_hidden_layers", "n_layer", "num_layers", "n_layers"),
    "hidden_size": ("hidden_size", "n_embd", "d_model"),
    "num_attention_heads": ("num_attention_heads", "n_head", "num_heads", "n_heads"),
    "vocab_size": ("vocab_size", "padded_vocab_size"),
    "context_window": (
        "max_position_embeddings",
        "n_positions",
        "max_sequence_length",
        "seq_length",
        "max_seq_len",
    ),
}
"""The keys each family names a fact by: Llama/Qwen/Gemma/Mixtral, GPT-2 and Falcon-RW (``n_*``),
MPT (``n_layers``, ``n_heads``, ``max_seq_len``), Qwen-1 and ChatGLM (``seq_length``)."""


def _first(config: dict[str, Any], keys: tuple[str, ...]) -> Any:
    return next((config[k] for k in keys if config.get(k) is not None), None)


def _kv_heads(config: dict[str, Any], heads: int) -> int:
    """KV heads under each family's keys; Falcon's depend on its decoder architecture."""
    if config.get("num_key_value_heads") is not None:
        return int(config["num_key_value_heads"])
    if config.get("model_type") in FAMILY_CONTEXT:  # Falcon, old (RW) and new key names
        if config.get("new_decoder_architecture"):
            return int(config.get("num_kv_heads") or config.get("n_head_kv") or heads)
        if config.get("n_head_kv") is not None:  # RW configs of Falcon-40B: n_head_kv, no flag
            return int(config["n_head_kv"])
        return 1 if config.get("multi_query", True) else heads
    return int(config.get("num_kv_heads") or heads)


def _experts(config: dict[str, Any]) -> tuple[int, int] | None:
    total = _first(config, ("num_experts", "num_local_experts", "n_routed_experts"))
    per_token = config.get("num_experts_per_tok")
    if total and per_token and total > 1:
        return int(total), int(per_token)
    return None


def facts_from_config(config: dict[str, Any], where: str) -> dict[str, Any]:
    """ModelConfig facts (all but the parameter counts) from a parsed config.json.

    Raises:
        ConfigError: a fact has no key this reader knows, naming the keys it looked for.
    """
    if not any(config.get(k) for k in _KEYS["num_layers"]) and isinstance(
        config.get("text_config"), dict
    ):
        config = {**config["text_config"], "torch_dtype": config.get("torch_dtype")}
    facts: dict[str, Any] = {}
    missing = []
    for fact, keys in _KEYS.items():
        value = _first(config, keys)
        if value is None and fact == "context_window":
            value = FAMILY_CONTEXT.get(str(config.get("model_type")))
        if value is None:
            missing.append(f"{fact} (looked for {' / '.join(keys)})")
        else:
            facts[fact] = int(value)
    if missing:
        raise ConfigError(
            [
                f"{where}: model_type {config.get('model_type')!r} has no key for "
                f"{', '.join(missing)}. Fix: use a registry model (conf/model/), or write a model "
                "YAML with these figures (conf/model/tiny_char.yaml shows every field)."
            ]
        )
    heads = facts["num_attention_heads"]
    facts["num_kv_heads"] = _kv_heads(config, heads)
    facts["head_dim"] = int(config.get("head_dim") or facts["hidden_size"] // heads)
    raw_dtype = str(config.get("torch_dtype") or config.get("dtype") or "float32")
    if raw_dtype.removeprefix("torch.") not in CONFIG_DTYPES:
        raise ConfigError(
            [
                f"{where}: torch_dtype {raw_dtype!r} is not one of "
                f"{', '.join(sorted(set(CONFIG_DTYPES.values())))}. Fix: set strategy.dtype."
            ]
        )
    facts["dtype"] = CONFIG_DTYPES[raw_dtype.removeprefix("torch.")]
    return facts


def _expert_params(config: dict[str, Any], facts: dict[str, Any]) -> int:
    """Parameters in all experts of all layers (gate, up and down projections), from config."""
    experts = _experts(config)
    assert experts is not None
    width = int(config.get("moe_intermediate_size") or config["intermediate_size"])
    return facts["num_layers"] * experts[0] * 3 * facts["hidden_size"] * width


def read_facts(ckpt: Checkpoint, need_params: bool = True) -> CheckpointFacts:
    """Every ModelConfig fact of a checkpoint, from config.json and the weights' headers.

    Args:
        ckpt: where the checkpoint's files are.
        need_params: no file giving the parameter count is an error (else the counts are None).

    Raises:
        ConfigError: config.json lacks a fact, or no file gives the parameter count.
    """
    config_path = ckpt.folder / CONFIG
    config = read_json(config_path)
    facts = facts_from_config(config, str(config_path))
    sources = [f"architecture from {config_path}"]
    shapes = tensor_params(ckpt)
    experts = _experts(config)
    expert_params: int | None = None
    if shapes is not None:
        counts, how = shapes
        facts["num_params"] = sum(counts.values())
        expert_params = sum(n for name, n in counts.items() if ".experts." in name) or None
    else:
        indexed = indexed_params(ckpt, facts["dtype"])
        if indexed is None and not need_params:
            facts["num_params"] = facts["num_active_params"] = None
            return CheckpointFacts(facts, sources)
        if indexed is None:
            raise ConfigError(
                [
                    f"{ckpt.folder}: no safetensors file or index to count parameters from. "
                    "Fix: fetch model.safetensors.index.json (or the *.safetensors files) next "
                    "to config.json."
                ]
            )
        facts["num_params"], how = indexed
    sources.append(f"parameters from {how}")
    facts["num_active_params"] = None
    if experts is not None:
        total, per_token = experts
        if expert_params is None:
            expert_params = _expert_params(config, facts)
        facts["num_active_params"] = (
            facts["num_params"] - expert_params * (total - per_token) // total
        )
        sources.append(f"active parameters: {per_token} of {total} experts per token")
    return CheckpointFacts(facts, sources)


def registry_pretrained(name: str) -> str | None:
    """The ``pretrained`` of registry entry ``conf/model/<name>.yaml``, if there is one."""
    path = CONF_DIR / "model" / f"{name}.yaml"
    if not path.is_file():
        return None
    from omegaconf import DictConfig, OmegaConf

    node = OmegaConf.load(path)
    value = node.get("pretrained") if isinstance(node, DictConfig) else None
    return str(value) if value is not None else None


def _differences(model: ModelConfig, facts: dict[str, Any]) -> list[str]:
    out = []
    for key in ARCHITECTURE_FACTS:
        ours, theirs = getattr(model, key), facts[key]
        ours = ours.value if isinstance(ours, DType) else ours
        if ours is not None and ours != theirs:
            out.append(f"{key} {theirs} (registry: {ours})")
    if model.num_params and abs(model.num_params - facts["num_params"]) > (
        PARAMS_TOLERANCE * facts["num_params"]
    ):
        out.append(f"num_params {facts['num_params']:,} (registry: {model.num_params:,})")
    return out


def _apply(model: ModelConfig, facts: dict[str, Any], name: str) -> ModelConfig:
    if facts["num_params"] is None:  # counts unknown here: keep the registry's
        facts = {k: v for k, v in facts.items() if k not in ("num_params", "num_active_params")}
    return replace(model, name=name, **{**facts, "dtype": DType(facts["dtype"])})


def resolve_model(model: ModelConfig, offline: bool) -> tuple[ModelConfig, list[str]]:
    """The model with the facts of the checkpoint it loads, and notes for the plan.

    ``model.pretrained`` is resolved first, against the directory the user stands in
    (``harness.planning.location``); the model returned carries the resolved value.

    Args:
        model: the composed model config (registry figures, or none for ``model=hf``).
        offline: no hub downloads; facts come from a local folder or the cache.

    Returns:
        The model to plan and run, and one note per thing taken from the checkpoint.

    Raises:
        ConfigError: the checkpoint's files are not here (with the command that fetches them),
            or its config.json cannot be read.
    """
    located = locate_pretrained(model.pretrained)  # once, here: the plan records what it is
    model = replace(model, pretrained=located.pretrained)
    model, notes = _resolve_facts(model, located.typed, offline)
    return model, [located.note, *notes] if located.note else notes


def _resolve_facts(model: ModelConfig, typed: str, offline: bool) -> tuple[ModelConfig, list[str]]:
    """``resolve_model`` once ``model.pretrained`` is resolved (``typed``: as it was given)."""
    unknown = any(getattr(model, key) is None for key in (*ARCHITECTURE_FACTS, "num_params"))
    # A registry entry (its figures in YAML) whose checkpoint was swapped on the command line.
    base = None if unknown else registry_pretrained(model.name)
    overridden = base is not None and locate_pretrained(base).pretrained != model.pretrained
    needs_facts = overridden or unknown
    # A registry model as it stands is checked against its checkpoint when that is here.
    if needs_facts:
        ckpt: Checkpoint | None = locate(model.pretrained, model.revision, offline, typed=typed)
    else:
        ckpt = _present(model)
    if ckpt is None:
        return model, []
    read = read_facts(ckpt, need_params=needs_facts)
    check_tokenizer(ckpt)  # after the config: its problems are said first
    where = f"{model.pretrained}" + (f" @ {ckpt.commit[:12]}" if ckpt.commit else "")
    if overridden:
        name = name_of(model.pretrained)
        note = (
            f"model.pretrained={typed} replaces {model.name}'s {base}: facts and run "
            f"name ({name}) follow the checkpoint ({where})"
        )
        diffs = _differences(model, read.facts)
        if diffs:
            note += "; differs from the registry in " + ", ".join(diffs)
        return _apply(model, read.facts, name), [note, *read.sources]
    diffs = _differences(model, read.facts)
    if needs_facts:
        return _apply(model, read.facts, model.name), [f"facts of {where}", *read.sources]
    if not diffs:
        return model, []
    note = (
        f"the checkpoint {where} disagrees with conf/model/{model.name}.yaml: "
        + ", ".join(diffs)
        + "; planned with the checkpoint's figures"
    )
    return _apply(model, read.facts, model.name), [note, *read.sources]


def _present(model: ModelConfig) -> Checkpoint | None:
    if is_local(model.pretrained):
        folder = resolve_project_path(model.pretrained)
        return Checkpoint(model.pretrained, folder) if (folder / CONFIG).is_file() else None
    return cached_snapshot(model.pretrained, model.revision)
