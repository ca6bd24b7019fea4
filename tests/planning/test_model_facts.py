"""Facts read from what is really there: any checkpoint through ``model=hf``, never a stale figure.

Checkpoints are written here by the tests themselves (a tiny Llama and a tiny Qwen3-MoE with
random weights, saved by transformers), or laid out as a Hugging Face cache holding only
config.json and the index, and every fact is compared with what the test wrote.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from harness.config.schema import ModelConfig
from harness.errors import ConfigError
from harness.paths import CONF_DIR
from harness.planning.checkpoint import locate
from harness.planning.model_facts import facts_from_config, read_facts, resolve_model
from tests.conftest import FIXTURES as TEST_FIXTURES
from tests.conftest import TINY_MODEL, assert_clean_failure, fake_hub_cache, run_harness
from tests.planning.test_plan import probe

FIXTURES = TEST_FIXTURES / "hf_configs"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


def _save(model, folder: Path) -> dict:
    """Save a transformers model with the bundled tokenizer; return the facts it really has."""
    model.save_pretrained(folder)
    for name in TOKENIZER_FILES:
        shutil.copy(TINY_MODEL / name, folder / name)
    c = model.config
    experts = sum(p.numel() for n, p in model.named_parameters() if ".experts." in n)
    total = sum(p.numel() for p in model.parameters())
    moe = getattr(c, "num_experts", None)
    idle = experts * (moe - c.num_experts_per_tok) // moe if moe else 0
    idle = experts * (moe - c.num_experts_per_tok) // moe if moe else 0
    return {
        "num_layers": c.num_hidden_layers,
        "hidden_size": c.hidden_size,
        "num_attention_heads": c.num_attention_heads,
        "num_kv_heads": c.num_key_value_heads,
        "head_dim": c.head_dim,
        "vocab_size": c.vocab_size,
        "context_window": c.max_position_embeddings,
        "dtype": "float32",
        "num_params": total,
        "num_active_params": total - idle if moe else None,
    }


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory) -> tuple[Path, dict]:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=100, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=512,
        tie_word_embeddings=False,
    )  # fmt: skip
    folder = tmp_path_factory.mktemp("ckpt") / "My-Tiny-Llama"
    return folder, _save(LlamaForCausalLM(config).float(), folder)


@pytest.fixture(scope="module")
def tiny_moe(tmp_path_factory) -> tuple[Path, dict]:
    import torch
    from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM

    torch.manual_seed(0)
    config = Qwen3MoeConfig(
        vocab_size=100, hidden_size=64, intermediate_size=128, moe_intermediate_size=32,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
        num_experts=8, num_experts_per_tok=2, max_position_embeddings=1024,
    )  # fmt: skip
    folder = tmp_path_factory.mktemp("ckpt") / "tiny-qwen3-moe"
    return folder, _save(Qwen3MoeForCausalLM(config).float(), folder)


@pytest.mark.parametrize("which", ["tiny_llama", "tiny_moe"])
def test_facts_are_read_from_the_checkpoint_files(request, which):
    folder, expected = request.getfixturevalue(which)
    read = read_facts(locate(str(folder), None, offline=True))
    assert read.facts == expected
    assert any("tensor shapes" in s for s in read.sources)
    if which == "tiny_moe":  # 2 of 8 experts per token: most expert weights sit idle
        assert expected["num_active_params"] < 0.6 * expected["num_params"]


@pytest.mark.parametrize("which", ["tiny_llama", "tiny_moe"])
def test_generic_option_plans_the_checkpoint(request, which, tmp_path):
    folder, expected = request.getfixturevalue(which)
    code, heavy, out = probe(tmp_path, "model=hf", f"model.pretrained={folder}", "plan_only=true")
    assert code == 0, out
    assert heavy == [], heavy  # read from files: no torch, no transformers
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert plan["model"] == folder.name.lower().replace("-", "_")
    facts = plan["model_facts"]
    assert {k: facts[k] for k in expected} == expected
    assert plan["memory"]["weights_total_gb"] == round(expected["num_params"] * 4 / 1e9, 3)


@pytest.mark.slow
def test_generic_option_runs_the_checkpoint(tiny_llama, tmp_path):
    folder, expected = tiny_llama
    proc = run_harness(
        ["model=hf", f"model.pretrained={folder}", "dataset=[arith_mc]",
         "dataset.arith_mc.limit=16", "tracking=none", f"outputs_root={tmp_path / 'out'}",
         f"hydra.run.dir={tmp_path / 'run'}"],
        tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["model"] == "my_tiny_llama"
    assert summary["plan"]["model_facts"]["num_layers"] == expected["num_layers"]
    assert summary["datasets"]["arith_mc"]["status"] == "ok"
    assert (tmp_path / "out" / "store" / "my_tiny_llama").is_dir()


def test_overridden_registry_checkpoint_is_planned_with_its_own_facts(tiny_llama, tmp_path):
    folder, expected = tiny_llama
    code, _, out = probe(tmp_path, "model=tiny_char", f"model.pretrained={folder}",
                         "plan_only=true")  # fmt: skip
    assert code == 0, out
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert plan["model"] == "my_tiny_llama"  # named after what is loaded, not tiny_char
    assert plan["model_facts"]["num_layers"] == expected["num_layers"] == 3
    assert plan["model_facts"]["num_params"] == expected["num_params"]
    assert "replaces tiny_char's plugins/models/tiny_char" in out
    assert "num_layers 3 (registry: 4)" in out


def registry_model(option: str) -> ModelConfig:
    """A registry entry typed by the schema, as Hydra composes it."""
    from harness.config.store import load_option

    return load_option("model", option, ModelConfig)


def test_registry_figures_that_disagree_with_the_cached_checkpoint_are_replaced(tmp_path):
    config = json.loads((FIXTURES / "llama3_1_8b.json").read_text())
    model = registry_model("llama3_1_8b")
    fake_hub_cache(tmp_path / "hub", "meta-llama/Llama-3.1-8B", config, model.num_params)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
        same, notes = resolve_model(model, offline=True)
        assert same == model and notes == []  # agrees: the registry stands
        config["num_hidden_layers"] = 40
        (tmp_path / "hub" / "models--meta-llama--Llama-3.1-8B" / "blobs").joinpath(
            "changed"
        ).write_text(json.dumps(config))
        snapshot = next((tmp_path / "hub").rglob("snapshots/*/config.json"))
        snapshot.unlink()
        snapshot.symlink_to("../../blobs/changed")
        changed, notes = resolve_model(model, offline=True)
    assert changed.num_layers == 40 and changed.name == "llama3_1_8b"
    assert "num_layers 40 (registry: 32)" in notes[0] and "checkpoint's figures" in notes[0]


def test_fake_hub_cache_plans_offline_without_torch(tmp_path):
    config = json.loads((FIXTURES / "qwen3_30b_a3b.json").read_text())
    fake_hub_cache(tmp_path / "hf_home" / "hub", "acme/Moe-30B", config, 30_532_122_624)
    code, heavy, out = probe(tmp_path, "model=hf", "model.pretrained=acme/Moe-30B",
                             "tier=small", "plan_only=true")  # fmt: skip
    assert code == 0, out
    assert heavy == [], heavy
    facts = json.loads((tmp_path / "plan.json").read_text())["model_facts"]
    assert (facts["num_layers"], facts["num_kv_heads"], facts["head_dim"]) == (48, 4, 128)
    assert facts["num_params"] == 30_532_122_624
    # Qwen3-30B-A3B: "3.3B activated"; the experts' share follows from the config alone.
    assert 3.0e9 < facts["num_active_params"] < 3.6e9
    assert "@ c0ffeec0ffee" in out  # the cached commit is named


def test_missing_checkpoint_names_the_files_and_the_command(tmp_path):
    proc = run_harness(["model=hf", "model.pretrained=acme/absent", "plan_only=true"], tmp_path)
    assert_clean_failure(
        proc,
        "model.pretrained='acme/absent'",
        "`hf download acme/absent config.json model.safetensors.index.json`",
        "offline=false",
    )


def test_generic_option_without_a_checkpoint_says_what_to_add(tmp_path):
    proc = run_harness(["model=hf", "plan_only=true"], tmp_path)
    assert_clean_failure(proc, "model.pretrained=")


def test_unreadable_config_names_the_missing_key(tmp_path):
    folder = tmp_path / "odd"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "mystery", "hidden_size": 64}))
    with pytest.raises(ConfigError) as err:
        resolve_model(
            ModelConfig(name="odd", pretrained=str(folder)), offline=True
        )  # fmt: skip
    text = str(err.value)
    assert "model_type 'mystery'" in text
    assert "num_layers (looked for num_hidden_layers / n_layer / num_layers / n_layers)" in text


# --- the config.json shapes of the registry's families ------------------------------------------
FACTS = ("num_layers", "hidden_size", "num_attention_heads", "num_kv_heads", "head_dim",
         "vocab_size", "context_window", "dtype")  # fmt: skip
BUNDLED = sorted(p.stem for p in FIXTURES.glob("*.json"))


@pytest.mark.parametrize("option", BUNDLED)
def test_registry_yaml_matches_its_bundled_config_json(option):
    read = facts_from_config(json.loads((FIXTURES / f"{option}.json").read_text()), option)
    registry = OmegaConf.load(CONF_DIR / "model" / f"{option}.yaml")
    assert {k: read[k] for k in FACTS} == {k: registry[k] for k in FACTS}


def test_every_registry_family_has_a_bundled_config():
    families = {json.loads((FIXTURES / f"{o}.json").read_text())["model_type"] for o in BUNDLED}
    assert {"llama", "qwen3", "qwen3_moe", "mixtral", "gemma2", "RefinedWeb"} <= families


@pytest.mark.parametrize(
    "keys,kv_heads",
    [
        ({"new_decoder_architecture": True, "num_kv_heads": 8}, 8),  # Falcon-180B, new keys
        ({"multi_query": True}, 1),  # Falcon-7B: one shared KV head
        ({"multi_query": False}, 64),  # Falcon-RW: full multi-head attention
        ({"n_head_kv": 8}, 8),  # Falcon-40B's RefinedWeb keys
    ],
)
def test_falcon_key_variants(keys, kv_heads):
    config = {"model_type": "falcon", "num_hidden_layers": 4, "hidden_size": 512,
              "num_attention_heads": 64, "vocab_size": 65024, **keys}  # fmt: skip
    facts = facts_from_config(config, "falcon")
    assert facts["num_kv_heads"] == kv_heads
    assert facts["context_window"] == 2048  # transformers' FalconConfig default
    assert facts["head_dim"] == 8 and facts["dtype"] == "float32"


def test_bundled_model_agrees_with_its_registry_entry():
    model = registry_model("tiny_char")
    resolved, notes = resolve_model(model, offline=True)
    assert notes == [] and resolved == model
    broken = replace(model, num_layers=2)
    fixed, notes = resolve_model(broken, offline=True)
    assert fixed.num_layers == 4 and "num_layers 4 (registry: 2)" in notes[0]


@pytest.mark.parametrize(
    "config,facts",
    [
        (  # GPT-2 (openai-community/gpt2)
            {"model_type": "gpt2", "n_layer": 12, "n_embd": 768, "n_head": 12, "n_positions": 1024,
             "vocab_size": 50257},
            (12, 768, 12, 12, 64, 1024),
        ),
        (  # MPT (mosaicml/mpt-7b)
            {"model_type": "mpt", "n_layers": 32, "d_model": 4096, "n_heads": 32,
             "max_seq_len": 2048, "vocab_size": 50432, "torch_dtype": "bfloat16"},
            (32, 4096, 32, 32, 128, 2048),
        ),
        (  # a multimodal wrapper (Gemma 3 style): the text model's facts sit in text_config
            {"model_type": "gemma3", "torch_dtype": "bfloat16",
             "text_config": {"num_hidden_layers": 34, "hidden_size": 2560,
                             "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 256,
                             "max_position_embeddings": 131072, "vocab_size": 262208}},
            (34, 2560, 8, 4, 256, 131072),
        ),
    ],
)  # fmt: skip
def test_other_families_outside_the_registry(config, facts):
    read = facts_from_config(config, "x")
    keys = ("num_layers", "hidden_size", "num_attention_heads", "num_kv_heads", "head_dim",
            "context_window")  # fmt: skip
    assert tuple(read[k] for k in keys) == facts


def test_the_download_command_we_suggest_exists_with_its_flags():
    """The fix in "no config.json here" messages is a command the installed huggingface_hub
    ships (2.x has ``hf download``; ``huggingface-cli download`` is gone)."""
    import subprocess
    import sys
    from pathlib import Path

    from harness.planning.checkpoint import fetch_command

    command = fetch_command("acme/model", "v2").split()
    exe = Path(sys.executable).parent / command[0]
    assert exe.is_file(), f"{command[0]} is not installed beside {sys.executable}"
    help_text = subprocess.run(
        [str(exe), command[1], "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert all(flag in help_text for flag in command if flag.startswith("--")), help_text
