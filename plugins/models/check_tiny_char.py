"""Smoke check of the bundled tiny model through lm-eval's HF engine (CPU, offline, ~10 s).

    python plugins/models/check_tiny_char.py [MODEL_DIR]

Checks: the tokenizer round-trips text exactly (spaces, newlines, punctuation); HFLM loads the
model; a generate_until request decodes the expected characters with no stray spaces; the
correct multiple-choice answer gets the highest loglikelihood. Exits non-zero on failure.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
MODEL_DIR = Path(__file__).resolve().parent / "tiny_char"


def main(argv: list[str]) -> int:
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM
    from transformers import AutoTokenizer

    path = argv[0] if argv else str(MODEL_DIR)
    tok = AutoTokenizer.from_pretrained(path)
    for text in ("ab c\n12", "The cat sees the ball. max(3,4)=?", "  x  \n\n y"):
        ids = tok.encode(text)
        assert len(ids) == len(text), (text, ids)
        assert tok.decode(ids) == text, (text, tok.decode(ids))

    lm = HFLM(pretrained=path, device="cpu", dtype="float32", batch_size=4)
    gen = {"until": ["\n"], "max_gen_toks": 12, "do_sample": False}
    cases = [("rev(abcd)=", "dcba"), ("rev(xyz)=", "zyx"), ("succ(47)=", "48"), ("succ(199)=", "200")]
    reqs = [Instance("generate_until", {}, (q, dict(gen)), i) for i, (q, _) in enumerate(cases)]
    outs = lm.generate_until(reqs)
    print("generate_until:", [(q, o) for (q, _), o in zip(cases, outs)])
    bad = [(q, want, got) for (q, want), got in zip(cases, outs) if got != want]
    assert not bad, f"unexpected generations (query, want, got): {bad}"

    ll = lm.loglikelihood([Instance("loglikelihood", {}, ("12+7=", c), i) for i, c in enumerate(["19", "17", "25", "21"])])
    print("loglikelihood 12+7= [19,17,25,21]:", [round(x[0], 3) for x in ll])
    assert max(range(4), key=lambda i: ll[i][0]) == 0
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
