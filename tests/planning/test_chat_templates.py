"""A chat template asked of a checkpoint is checked in planning, before any load: none at all,
several without a default, or a name it does not have."""

from __future__ import annotations

import json

from harness.planning.checkpoint import chat_template_problem, chat_templates


def tokenizer_folder(tmp_path, **config):
    (tmp_path / "tokenizer.json").write_text("{}")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    return tmp_path


def test_a_single_template_serves_true_and_its_name_only(tmp_path):
    """lm-eval applies a single template whatever name is asked (with a warning): a name it
    does not have (or ``ture``, a typo of true) is refused before the load (issue 35)."""
    folder = tokenizer_folder(tmp_path, chat_template="{{ messages }}")
    assert chat_templates(folder) == {"default": "{{ messages }}"}
    assert chat_template_problem(folder, True, "m") is None
    assert chat_template_problem(folder, "default", "m") is None
    problem = chat_template_problem(folder, "chatml", "m")
    assert "has no chat template of that name" in problem and "its only one" in problem
    assert "Did you mean 'true'" in chat_template_problem(folder, "ture", "m")


def test_named_templates_need_a_default_or_a_name_they_have(tmp_path):
    named = [{"name": "tool_use", "template": "t"}, {"name": "rag", "template": "r"}]
    folder = tokenizer_folder(tmp_path, chat_template=named)
    assert "none named 'default'" in chat_template_problem(folder, True, "m")
    assert chat_template_problem(folder, "rag", "m") is None
    problem = chat_template_problem(folder, "tool_uses", "m")
    assert "Did you mean 'tool_use'" in problem and "rag, tool_use" in problem


def test_template_files_of_transformers_5(tmp_path):
    folder = tokenizer_folder(tmp_path)
    assert "has no chat template" in chat_template_problem(folder, True, "m")
    (folder / "chat_template.jinja").write_text("{{ messages }}")
    (folder / "additional_chat_templates").mkdir()
    (folder / "additional_chat_templates" / "rag.jinja").write_text("r")
    assert sorted(chat_templates(folder)) == ["default", "rag"]
    assert chat_template_problem(folder, True, "m") is None


def test_a_folder_without_a_tokenizer_is_not_judged(tmp_path):
    assert chat_template_problem(tmp_path, True, "m") is None  # a hub snapshot of config only
