"""A generation task whose ``max_gen_toks`` leaves the prompt no room in the model's context is
refused before the model loads (harness/evaluation/generation_room.py), not by lm-eval's
AssertionError mid-run."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

from harness.evaluation.generation_room import generation_room_problems, max_gen_toks
from harness.evaluation.tasks import PreparedDataset
from harness.paths import PLUGINS_DIR
from tests.conftest import assert_clean_failure, run_harness
from tests.planning.test_plan import plan_run, run_config

CONTEXT = 256
"""The bundled model's context window (conf/model/tiny_char.yaml)."""


def test_the_count_is_read_as_lm_eval_reads_it():
    assert max_gen_toks({}, {}, 256) == (256, "lm-eval's default")
    task = {"until": ["\n"], "max_gen_toks": 12}
    assert max_gen_toks(task, {}, 256) == (12, "max_gen_toks, the task's generation_kwargs")
    assert max_gen_toks(task, {"max_gen_toks": 300}, 256) == (300, "max_gen_toks, gen_kwargs")
    # lm-eval's order of names: max_gen_toks wins over max_new_tokens, wherever each is set
    assert max_gen_toks(task, {"max_new_tokens": 300}, 256)[0] == 12
    assert max_gen_toks({}, {"max_tokens": 400}, 256) == (400, "max_tokens, gen_kwargs")


def generation_task(name: str, kwargs: dict) -> SimpleNamespace:
    config = SimpleNamespace(task=name, generation_kwargs=kwargs)
    return SimpleNamespace(OUTPUT_TYPE="generate_until", config=config)


def test_each_dataset_without_room_is_named_with_its_fix():
    run = run_config("tiny_char", "single", "local")
    plan = plan_run(run)
    assert plan.max_model_len == CONTEXT
    scored = SimpleNamespace(OUTPUT_TYPE="multiple_choice", config=SimpleNamespace(task="mc"))
    datasets = {
        "fits": PreparedDataset("fits", run.dataset["arith_mc"], [generation_task("a", {
            "max_gen_toks": 255})], False, None),
        "gsm": PreparedDataset("gsm", run.dataset["arith_mc"], [scored, generation_task(
            "gsm8k", {"until": ["Q:"]})], True, None),
    }  # fmt: skip
    (said,) = generation_room_problems(run, plan, datasets)
    assert said.startswith("dataset 'gsm': task 'gsm8k' generates up to max_gen_toks=256 tokens")
    assert "(lm-eval's default)" in said and "context of 256 tokens (max_model_len)" in said
    assert "Fix: dataset.gsm.gen_kwargs={max_gen_toks:128} (fewer than 256)" in said
    assert said.endswith("or a model with a longer context.")
    shorter = replace(run, strategy=replace(run.strategy, max_model_len=200))
    (said,) = generation_room_problems(shorter, plan_run(shorter), {"fits": datasets["fits"]})
    assert said.endswith("or strategy.max_model_len=256 (the model's context window).")


def test_a_task_generating_the_whole_context_exits_2_before_the_model_loads(tmp_path):
    tasks = tmp_path / "tasks"
    (tasks / "data").mkdir(parents=True)
    shutil.copy(PLUGINS_DIR / "tasks" / "synth" / "utils.py", tasks)
    rows = [{"query": "rev(ab)=", "answer": "ba"}, {"query": "rev(xyz)=", "answer": "zyx"}]
    (tasks / "data" / "long_gen.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tasks / "long_gen.yaml").write_text(
        "task: long_gen\ncustom_dataset: !function utils.load\n"
        "dataset_kwargs:\n  file: long_gen.jsonl\noutput_type: generate_until\n"
        "test_split: test\ndoc_to_text: query\ndoc_to_target: answer\n"
        f"generation_kwargs:\n  until: ['\\n']\n  max_gen_toks: {CONTEXT}\n  do_sample: false\n"
        "metric_list:\n  - metric: exact_match\n    aggregation: mean\n"
        "    higher_is_better: true\n"
    )
    run_dir = tmp_path / "run"
    proc = run_harness(
        [f"task_paths=[{tasks}]", "dataset=[long_gen,reverse_gen]", "tracking=none",
         "dataset.reverse_gen.gen_kwargs={max_gen_toks:300}", f"output_dir={run_dir}"],
        tmp_path,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert_clean_failure(
        proc,
        "2 datasets cannot be evaluated",
        "dataset 'long_gen': task 'long_gen' generates up to max_gen_toks=256 tokens (max_gen_"
        "toks, the task's generation_kwargs), which must be fewer than the model's context of "
        "256 tokens",
        "Fix: dataset.long_gen.gen_kwargs={max_gen_toks:128}",
        "dataset 'reverse_gen': task 'reverse_gen' generates up to max_gen_toks=300 tokens "
        "(max_gen_toks, gen_kwargs)",
    )
    events = [json.loads(line)["event"] for line in (run_dir / "events.jsonl").open()]
    assert "load_started" not in events, events
    assert not list(Path(run_dir).glob("results/*")), "nothing was evaluated"
