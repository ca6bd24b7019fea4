"""Make the bundled chat variant of tiny_char: same weights, a tokenizer with a chat template.

    python plugins/models/make_tiny_char_chat.py          # writes plugins/models/tiny_char_chat/

No training and no randomness: every file but one is tiny_char's own (config.json,
generation_config.json and tokenizer.json copied byte for byte; model.safetensors a relative
symlink to ../tiny_char/model.safetensors, so the weights exist once in git), and
tokenizer_config.json is tiny_char's with a ``chat_template`` entry added (written as
train_tiny_char.py writes it: indent 2, sorted keys). Running it twice gives the same folder.

The template lives in tokenizer_config.json only, the place every transformers release and vLLM
read (transformers 5 also reads a ``chat_template.jinja`` file beside it, and that file would win:
none is written). It tags each turn with its role on a line of its own, in characters the
character-level vocabulary holds (``<``, ``|``, ``>``, letters, ``\\n``), so no ``<unk>`` appears:

    <|system|>
    Answer with the number only.
    <|user|>
    12+7=
    <|assistant|>
    19
    <|user|>
    3+4=
    <|assistant|>

(the last line is the generation prompt, ``add_generation_prompt=True``). A system message, any
number of user/assistant turns and a final assistant message to be continued
(``continue_final_message=True``, which lm-eval asks for when a task has a ``gen_prefix``) all work.
The weights were never trained on it: with the template the model sees text unlike its training
data, which is the point (a score that moves when a chat template is applied).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC_DIR = HERE / "tiny_char"
OUT_DIR = HERE / "tiny_char_chat"
COPIED = ("config.json", "generation_config.json", "tokenizer.json")
WEIGHTS = "model.safetensors"

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)
"""One line per role tag, one (or more) per message; the generation prompt is the assistant tag."""

EXAMPLE = [
    {"role": "system", "content": "Answer with the number only."},
    {"role": "user", "content": "12+7="},
    {"role": "assistant", "content": "19"},
    {"role": "user", "content": "3+4="},
]
EXAMPLE_RENDERED = (
    "<|system|>\nAnswer with the number only.\n"
    "<|user|>\n12+7=\n<|assistant|>\n19\n<|user|>\n3+4=\n<|assistant|>\n"
)


def write(out: Path, src: Path = SRC_DIR) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name in COPIED:
        shutil.copyfile(src / name, out / name)
    stray = out / "chat_template.jinja"  # would override tokenizer_config.json's entry
    if stray.exists():
        stray.unlink()
    link = out / WEIGHTS
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(os.path.relpath(src / WEIGHTS, out))
    cfg = json.loads((src / "tokenizer_config.json").read_text())
    cfg["chat_template"] = CHAT_TEMPLATE
    (out / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def check(out: Path) -> None:
    """Load it as lm-eval would (AutoTokenizer) and render the example; raise on any difference."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(out))
    assert tok.chat_template == CHAT_TEMPLATE, tok.chat_template
    text = tok.apply_chat_template(EXAMPLE, tokenize=False, add_generation_prompt=True)
    assert text == EXAMPLE_RENDERED, repr(text)
    ids = tok.encode(text)
    assert tok.unk_token_id not in ids and len(ids) == len(text), ids
    assert tok.decode(ids) == text
    plain = AutoTokenizer.from_pretrained(str(SRC_DIR))
    assert plain.chat_template is None, "tiny_char itself must have no chat template"
    assert (out / WEIGHTS).resolve() == (SRC_DIR / WEIGHTS).resolve()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(OUT_DIR), help="folder to write (default: %(default)s)")
    args = ap.parse_args(argv)
    out = Path(args.out).resolve()
    write(out)
    check(out)
    print(f"wrote {out}:")
    for p in sorted(out.iterdir()):
        target = f" -> {os.readlink(p)}" if p.is_symlink() else ""
        print(f"  {p.name}{target}")
    print("rendered example (system, one few-shot turn, generation prompt):")
    print(EXAMPLE_RENDERED, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
