"""Train the bundled tiny character-level Llama on the synth task formats.

    python plugins/models/train_tiny_char.py            # writes plugins/models/tiny_char/
    python plugins/models/train_tiny_char.py --untrained /tmp/tiny_char_untrained   # same shape, random init

Training examples come from plugins/tasks/synth/generate_data.py with a seed different from the
test data's, rendered exactly as lm-eval presents them (query + target_delimiter "" + answer + "\\n";
story documents preceded by the <s> that lm-eval's rolling loglikelihood uses as prefix token;
the loss skips task prompts, which are random by construction).
CPU only, fixed seeds; prints the wall time it took.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import random
import string
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
OUT_DIR = HERE / "tiny_char"
GEN_PATH = HERE.parent / "tasks" / "synth" / "generate_data.py"
SEED = 0
TRAIN_SEED = 9001  # the test data uses generate_data.TEST_SEED (1234)
SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]  # ids 0..3
CHARS = list(string.ascii_lowercase + string.ascii_uppercase + string.digits + string.punctuation + " \n")


def load_generator():
    spec = importlib.util.spec_from_file_location("synth_generate_data", GEN_PATH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def build_tokenizer():
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(SPECIALS + CHARS)}
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tk.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
        clean_up_tokenization_spaces=False, model_max_length=256,
    )
    sample = "ab c\n12 The cat. max(3,4)=?"
    ids = tok.encode(sample)
    assert len(ids) == len(sample), (ids, sample)
    assert tok.decode(ids) == sample, repr(tok.decode(ids))
    assert tok.unk_token_id not in ids
    return tok


def save_tokenizer(tok, out: Path) -> None:
    """save_pretrained, then name the class PreTrainedTokenizerFast (transformers 5 writes its new
    "TokenizersBackend", which transformers 4.x, e.g. beside vLLM, does not know)."""
    import json

    tok.save_pretrained(out)
    cfg_path = out / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def model_config(tok):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tok), hidden_size=128, intermediate_size=384, num_hidden_layers=4,
        num_attention_heads=2, num_key_value_heads=2, head_dim=64, max_position_embeddings=256,
        rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        torch_dtype="float32",
    )


def training_pools(gen, tok, n_per_task: int, n_story: int, seed: int):
    """Pre-encoded (ids, n_prompt) pairs: task rows as lm-eval shows them (no BOS; the loss skips the
    prompt), stories after the <s> that lm-eval's rolling loglikelihood uses as prefix, ending in </s>."""
    tasks = []
    for task in ("arith_mc", "compare_mc", "reverse_gen", "successor_gen"):
        for row in gen.generate(task, seed, n_per_task):
            tasks.append((tok.encode(gen.train_text(task, row)), len(tok.encode(row["query"]))))
    stories = []
    for row in gen.generate("story_ppl", seed, n_story):
        ids = [tok.bos_token_id] + tok.encode(gen.train_text("story_ppl", row)) + [tok.eos_token_id]
        stories.append((ids, 1))
    return tasks, stories


def make_batch(items, pad_id: int, bos_id: int, rng: random.Random, p_bos: float = 0.0):
    seqs = []
    for ids, n_prompt in items:
        if p_bos and rng.random() < p_bos:  # a few task rows with a leading <s>: either convention works
            ids, n_prompt = [bos_id] + ids, n_prompt + 1
        seqs.append((ids, n_prompt))
    L = max(len(s) for s, _ in seqs)
    x = torch.full((len(seqs), L), pad_id, dtype=torch.long)
    labels = torch.full((len(seqs), L), -100, dtype=torch.long)
    for i, (s, n_prompt) in enumerate(seqs):
        x[i, : len(s)] = torch.tensor(s)
        labels[i, n_prompt : len(s)] = x[i, n_prompt : len(s)]  # model shifts labels internally
    attn = (x != pad_id).long()
    return x, attn, labels


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(OUT_DIR))
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--story-batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--untrained", metavar="DIR", help="save a randomly initialised model of the same shape and exit")
    args = ap.parse_args(argv)

    t0 = time.time()
    random.seed(SEED)
    torch.manual_seed(SEED)
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

    from transformers import LlamaForCausalLM

    tok = build_tokenizer()
    cfg = model_config(tok)
    model = LlamaForCausalLM(cfg).float()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"params: {n_params}  vocab: {len(tok)}", flush=True)

    if args.untrained:
        out = Path(args.untrained)
        model.save_pretrained(out, safe_serialization=True)
        save_tokenizer(tok, out)
        print(f"saved untrained model to {out}")
        return 0

    gen = load_generator()
    task_pool, story_pool = training_pools(gen, tok, n_per_task=20000, n_story=5000, seed=TRAIN_SEED)
    rng = random.Random(SEED)

    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.98), weight_decay=0.01)
    warm = 100

    def lr_at(step):
        if step < warm:
            return args.lr * (step + 1) / warm
        p = (step - warm) / max(1, args.steps - warm)
        return args.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * p)))

    model.train()
    ema = {}
    for step in range(args.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        # short task rows in one batch, long story rows every third step in another: little padding
        batches = [("task", [task_pool[rng.randrange(len(task_pool))] for _ in range(args.batch)], 0.1)]
        if step % 3 == 0:
            batches.append(("story", [story_pool[rng.randrange(len(story_pool))] for _ in range(args.story_batch)], 0.0))
        opt.zero_grad(set_to_none=True)
        for name, items, p_bos in batches:
            x, attn, labels = make_batch(items, tok.pad_token_id, tok.bos_token_id, rng, p_bos)
            loss = model(input_ids=x, attention_mask=attn, labels=labels).loss
            loss.backward()
            ema[name] = loss.item() if name not in ema else 0.95 * ema[name] + 0.05 * loss.item()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 100 == 0 or step == args.steps - 1:
            losses = "  ".join(f"{k} {v:.4f}" for k, v in ema.items())
            print(f"step {step:5d}  {losses}  lr {lr_at(step):.2e}  {time.time() - t0:6.1f}s", flush=True)

    model.eval()
    out = Path(args.out)
    model.save_pretrained(out, safe_serialization=True)
    save_tokenizer(tok, out)
    dt = time.time() - t0
    print(f"saved {out}; params {n_params}; training took {dt:.1f}s ({dt / 60:.2f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
