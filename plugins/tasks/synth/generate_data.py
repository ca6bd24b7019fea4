"""Deterministic generator for the offline ``synth`` lm-eval task suite.

Run from anywhere::

    python plugins/tasks/synth/generate_data.py

It writes ``data/<task>.jsonl`` next to this file (the test split of each task).
Running it twice gives byte-identical files (fixed seed, sorted keys, ``\\n`` line ends).

The ``make_*`` functions are importable so that a training script can draw
*training* examples of exactly the same formats with a different seed, and
``train_text`` renders a row the way lm-eval shows it to a model (prompt, target
delimiter, answer, and the ``\\n`` that ends a generation).
"""

from __future__ import annotations

import json
import random
import string
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent / "data"
TEST_SEED = 1234
N_TEST = {
    "arith_mc": 200,
    "compare_mc": 200,
    "reverse_gen": 200,
    "successor_gen": 200,
    "story_ppl": 100,
}
TASKS = tuple(N_TEST)

# --- formats (the YAMLs use doc_to_text: query, target_delimiter: "") ------------
ARITH_MAX = 29  # operands 0..ARITH_MAX


def make_arith_mc(rng: random.Random, n: int) -> list[dict]:
    """'12+7=' -> one of 4 candidate sums; distractors are distinct, within +-12 of the sum."""
    rows = []
    for _ in range(n):
        a, b = rng.randint(0, ARITH_MAX), rng.randint(0, ARITH_MAX)
        s = a + b
        pool = [v for v in range(max(0, s - 12), s + 13) if v != s]
        cands = [*rng.sample(pool, 3), s]
        rng.shuffle(cands)
        rows.append(
            {
                "query": f"{a}+{b}=",
                "choices": [str(c) for c in cands],
                "label": cands.index(s),
                "a": a,
                "b": b,
            }
        )
    return rows


def make_compare_mc(rng: random.Random, n: int) -> list[dict]:
    """'max(37,52)=' -> '37' or '52' (two distinct two-digit numbers, in prompt order)."""
    rows = []
    for _ in range(n):
        a, b = rng.sample(range(10, 100), 2)
        rows.append(
            {
                "query": f"max({a},{b})=",
                "choices": [str(a), str(b)],
                "label": 0 if a > b else 1,
                "a": a,
                "b": b,
            }
        )
    return rows


def make_reverse_gen(rng: random.Random, n: int) -> list[dict]:
    """'rev(abcd)=' -> 'dcba' (3-5 random lowercase letters)."""
    rows = []
    for _ in range(n):
        w = "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(3, 5)))
        rows.append({"query": f"rev({w})=", "answer": w[::-1], "word": w})
    return rows


def make_successor_gen(rng: random.Random, n: int) -> list[dict]:
    """'after 47 comes ' style, written 'succ(47)=' -> '48' (0..998)."""
    rows = []
    for _ in range(n):
        k = rng.randint(0, 998)
        rows.append({"query": f"succ({k})=", "answer": str(k + 1), "n": k})
    return rows


SUBJECTS = ["the cat", "the dog", "a bird", "the old man", "my sister", "the farmer"]
VERBS = ["sees", "eats", "likes", "finds", "chases", "paints"]
OBJECTS = ["a red apple", "the ball", "some fish", "a small house", "the green hat", "bread"]
ENDINGS = [".", ".", ".", " today.", " again.", " at night."]


def _sentence(rng: random.Random) -> str:
    s = f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)}{rng.choice(ENDINGS)}"
    return s[0].upper() + s[1:]


def make_story_ppl(rng: random.Random, n: int, max_chars: int = 200) -> list[dict]:
    """Short stories: 2-6 sentences from a small grammar, each document <= max_chars."""
    rows = []
    for _ in range(n):
        sents: list[str] = []
        for _ in range(rng.randint(2, 6)):
            s = _sentence(rng)
            if len(" ".join([*sents, s])) > max_chars:
                break
            sents.append(s)
        rows.append({"text": " ".join(sents)})
    return rows


MAKERS = {
    "arith_mc": make_arith_mc,
    "compare_mc": make_compare_mc,
    "reverse_gen": make_reverse_gen,
    "successor_gen": make_successor_gen,
    "story_ppl": make_story_ppl,
}


def train_text(task: str, row: dict) -> str:
    """The text a model sees for a row in lm-eval (target_delimiter is "" in every YAML)."""
    if task in ("arith_mc", "compare_mc"):
        return row["query"] + row["choices"][row["label"]] + "\n"
    if task in ("reverse_gen", "successor_gen"):
        return row["query"] + row["answer"] + "\n"
    if task == "story_ppl":
        return row["text"]
    raise KeyError(task)


def generate(task: str, seed: int, n: int) -> list[dict]:
    """Rows of one task; the stream for (task, seed) does not depend on other tasks."""
    rng = random.Random(f"{task}:{seed}")
    return MAKERS[task](rng, n)


def write_all(out_dir: Path = DATA_DIR, seed: int = TEST_SEED) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for task in TASKS:
        path = out_dir / f"{task}.jsonl"
        with open(path, "w", encoding="utf-8", newline="\n") as f:
            for row in generate(task, seed, N_TEST[task]):
                f.write(json.dumps(row, sort_keys=True, ensure_ascii=False) + "\n")
        paths.append(path)
    return paths


if __name__ == "__main__":
    for p in write_all():
        print(f"wrote {p}")
