"""A randomly initialised model with a real model's shape, built offline: the checkpoint folder the
GPU check plans and loads (no download; nothing is trained).

    python benchmarks/gpu_check_model.py --config tests/fixtures/hf_configs/llama3_1_8b.json \\
        --out /tmp/llama8b --device cuda [--shrink]

The weights are drawn where ``--device`` says (on a GPU an 8B bf16 model takes seconds there, where
the CPU would take minutes) and saved as safetensors. The tokenizer is the bundled tiny_char one
(100 character tokens, all inside the real vocabulary of 128256), so the embedding and the output
layer keep the real shape; the config's special token ids are set to that tokenizer's.
``--shrink`` keeps the vocabulary but makes the layers small (the dry run, on the CPU).
Prints one JSON line: parameters, bytes on disk, seconds to build and to save.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOKENIZER = ROOT / "plugins" / "models" / "tiny_char"
SHRUNK = {
    "num_hidden_layers": 2,
    "hidden_size": 256,
    "intermediate_size": 512,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 64,
}
"""The dry run's layers: small enough for the CPU, the vocabulary and the rest kept."""


def add_cli_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, required=True, help="a model's config.json")
    parser.add_argument("--out", type=Path, required=True, help="the checkpoint folder to write")
    parser.add_argument("--device", default="cuda", help="where the weights are drawn")
    parser.add_argument("--dtype", default="bfloat16", help="torch dtype of the weights")
    parser.add_argument("--shrink", action="store_true", help="small layers (the dry run)")


def model_config(path: Path, shrink: bool) -> dict:
    """The config as read, with tiny_char's special tokens (and small layers when ``shrink``)."""
    config = json.loads(path.read_text())
    tokens = json.loads((TOKENIZER / "config.json").read_text())
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        config[key] = tokens[key]
    if shrink:
        config |= SHRUNK
    return config


def build(args: argparse.Namespace) -> dict:
    """Draw the weights on ``args.device``, save the checkpoint with tiny_char's tokenizer."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = model_config(args.config, args.shrink)
    cfg = AutoConfig.for_model(**config)
    dtype = getattr(torch, args.dtype)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    with torch.device(args.device):
        model = AutoModelForCausalLM.from_config(cfg, dtype=dtype)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    built = time.perf_counter() - t0
    params = sum(p.numel() for p in model.parameters())
    if args.out.exists():
        shutil.rmtree(args.out)
    t0 = time.perf_counter()
    model.save_pretrained(args.out, max_shard_size="5GB")
    saved = time.perf_counter() - t0
    shutil.copy(TOKENIZER / "tokenizer.json", args.out / "tokenizer.json")
    tok_config = json.loads((TOKENIZER / "tokenizer_config.json").read_text())
    tok_config["model_max_length"] = config.get("max_position_embeddings", 2048)
    (args.out / "tokenizer_config.json").write_text(json.dumps(tok_config, indent=2))
    size = sum(p.stat().st_size for p in args.out.iterdir())
    return {
        "params": params,
        "dtype": args.dtype,
        "device": args.device,
        "layers": config["num_hidden_layers"],
        "vocab_size": config["vocab_size"],
        "bytes_on_disk": size,
        "build_s": round(built, 2),
        "save_s": round(saved, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    add_cli_args(parser)
    print(json.dumps(build(parser.parse_args())))


if __name__ == "__main__":
    main()
