"""The bundled chat model: tiny_char's weights with a role-tagged chat template, and tiny_char
itself with none (so that a chat template asked of a checkpoint without one can be tested).

Transformers and lm-eval's HF wrapper only, no generation: a few seconds.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re

import pytest

from harness.paths import PLUGINS_DIR
from tests.conftest import TINY_MODEL

pytestmark = pytest.mark.slow

CHAT_MODEL = PLUGINS_DIR / "models" / "tiny_char_chat"
TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)
SYSTEM = "Reply with the answer only."
HISTORY = [  # what lm-eval sends with --system_instruction --fewshot_as_multiturn --num_fewshot 2
    {"role": "system", "content": SYSTEM},
    {"role": "user", "content": "12+7="},
    {"role": "assistant", "content": "19"},
    {"role": "user", "content": "rev(abc)="},
    {"role": "assistant", "content": "cba"},
    {"role": "user", "content": "3+4="},
]
RENDERED = (
    "<|system|>\nReply with the answer only.\n"
    "<|user|>\n12+7=\n<|assistant|>\n19\n"
    "<|user|>\nrev(abc)=\n<|assistant|>\ncba\n"
    "<|user|>\n3+4=\n<|assistant|>\n"
)


@pytest.fixture(scope="module")
def tokenizers():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(CHAT_MODEL)), AutoTokenizer.from_pretrained(
        str(TINY_MODEL)
    )


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_chat_template_renders_system_fewshot_turns_and_generation_prompt(tokenizers):
    chat, _ = tokenizers
    assert chat.chat_template == TEMPLATE
    text = chat.apply_chat_template(HISTORY, tokenize=False, add_generation_prompt=True)
    assert text == RENDERED
    # every character of the tags is in the character vocabulary: one token each, no <unk>
    ids = chat.encode(text)
    assert len(ids) == len(text) and chat.unk_token_id not in ids
    assert chat.decode(ids) == text
    # without the generation prompt the history ends after the last user turn
    bare = chat.apply_chat_template(HISTORY, tokenize=False, add_generation_prompt=False)
    assert bare == RENDERED.removesuffix("<|assistant|>\n")
    # a final assistant message is continued, as lm-eval asks when a task has a gen_prefix
    prefixed = chat.apply_chat_template(
        [*HISTORY, {"role": "assistant", "content": "Answer:"}],
        tokenize=False, add_generation_prompt=False, continue_final_message=True,
    )  # fmt: skip
    assert prefixed == RENDERED + "Answer:"


def test_the_template_is_in_tokenizer_config_only():
    config = json.loads((CHAT_MODEL / "tokenizer_config.json").read_text())
    assert config["chat_template"] == TEMPLATE
    # transformers 5 would let a chat_template.jinja file override the config's entry
    assert not (CHAT_MODEL / "chat_template.jinja").exists()


def test_plain_tiny_char_has_no_chat_template(tokenizers):
    _, plain = tokenizers
    assert plain.chat_template is None
    assert "chat_template" not in json.loads((TINY_MODEL / "tokenizer_config.json").read_text())
    assert not (TINY_MODEL / "chat_template.jinja").exists()
    with pytest.raises(ValueError, match="chat_template is not set"):
        plain.apply_chat_template(HISTORY, tokenize=False, add_generation_prompt=True)


def test_the_two_models_share_weights_config_and_vocabulary():
    for name in ("model.safetensors", "config.json", "generation_config.json", "tokenizer.json"):
        assert _sha(CHAT_MODEL / name) == _sha(TINY_MODEL / name), name
    # the weights exist once: a relative symlink, which git stores as a link
    link = CHAT_MODEL / "model.safetensors"
    assert link.is_symlink() and not link.readlink().is_absolute()
    assert link.resolve() == (TINY_MODEL / "model.safetensors").resolve()
    chat_cfg = json.loads((CHAT_MODEL / "tokenizer_config.json").read_text())
    plain_cfg = json.loads((TINY_MODEL / "tokenizer_config.json").read_text())
    assert {k: v for k, v in chat_cfg.items() if k != "chat_template"} == plain_cfg


def test_make_script_reproduces_the_folder(tmp_path):
    path = PLUGINS_DIR / "models" / "make_tiny_char_chat.py"
    spec = importlib.util.spec_from_file_location("make_tiny_char_chat", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.CHAT_TEMPLATE == TEMPLATE
    module.write(tmp_path)
    made = sorted(p.name for p in tmp_path.iterdir())
    assert made == sorted(p.name for p in CHAT_MODEL.iterdir() if p.name != "README.md")
    for name in made:
        assert (tmp_path / name).is_symlink() == (CHAT_MODEL / name).is_symlink(), name
        assert _sha(tmp_path / name) == _sha(CHAT_MODEL / name), name


def test_lm_eval_renders_a_multiturn_fewshot_prompt_with_the_template():
    """lm-eval's HF wrapper reads the template, and a bundled task's prompt under
    --apply_chat_template --fewshot_as_multiturn --num_fewshot 2 --system_instruction is the
    role-tagged text; tiny_char's wrapper answers no template and refuses to apply one."""
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager, get_task_dict

    lm = HFLM(pretrained=str(CHAT_MODEL), device="cpu", dtype="float32", batch_size=1)
    assert lm.chat_template(True) == TEMPLATE
    assert lm.apply_chat_template(HISTORY) == RENDERED

    manager = TaskManager(include_path=str(PLUGINS_DIR / "tasks" / "synth"), include_defaults=False)
    task = get_task_dict(["arith_mc"], manager)["arith_mc"]
    doc = next(iter(task.test_docs()))
    prompt = task.fewshot_context(
        doc, num_fewshot=2, system_instruction=SYSTEM, apply_chat_template=True,
        fewshot_as_multiturn=True, chat_template=lm.apply_chat_template,
    )  # fmt: skip
    turn = r"<\|user\|>\n\d+\+\d+=\n<\|assistant\|>\n\d+\n"
    expected = (
        rf"<\|system\|>\n{re.escape(SYSTEM)}\n{turn}{turn}"
        rf"<\|user\|>\n{re.escape(doc['query'])}\n<\|assistant\|>\n"
    )
    assert re.fullmatch(expected, prompt), prompt

    plain = HFLM(pretrained=str(TINY_MODEL), device="cpu", dtype="float32", batch_size=1)
    assert plain.chat_template(True) is None
    with pytest.raises(ValueError, match="chat_template is not set"):
        plain.apply_chat_template(HISTORY)
