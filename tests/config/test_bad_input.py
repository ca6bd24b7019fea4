"""The bad-input matrix: every case ends with a message naming the value and the fix, no traceback,
and (where the input allows) before any model is loaded."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from harness.paths import PLUGINS_DIR
from tests.conftest import assert_clean_failure, run_harness

pytestmark = pytest.mark.slow

NO_TRACKING = "tracking=none"

# (id, overrides, substrings the output must contain). "{tasks}" is a copy of the bundled suite
# with one defect (see `broken_suite`),.
CASES = [
    # unknown names
    ("unknown-model", ["model=falcon_41b"], ["model=falcon_41b", "Did you mean 'falcon_40b'"]),
    ("unknown-strategy", ["strategy=tp3"], ["strategy=tp3", "Options:", "tp2"]),
    ("unknown-tier", ["tier=huge"], ["tier=huge", "Options:", "xlarge"]),
    (
        "unknown-dataset",
        ["dataset=[arith_mc,gsm8kk]"],
        ["dataset 'gsm8kk'", "Did you mean 'gsm8k'", "lm_eval ls tasks"],
    ),
    ("dataset-name-with-a-dot", ["dataset=[arith.mc]"], ["dataset=arith.mc", "Options:"]),
    ("unknown-tracking", ["tracking=mlfow"], ["tracking=mlfow", "Options:"]),
    ("unknown-key", ["dataset.arith_mc.limt=3"], ["limt", "dataset.arith_mc"]),
    # keys added with Hydra's '+' prefixes are refused too, not silently dropped
    (
        "plus-misspelt-key",
        ["+strategy.batchsize=8", NO_TRACKING],
        ["+strategy.batchsize=8", "Did you mean 'batch_size'", "Fix:"],
    ),
    ("plus-unknown-key", ["+foo=bar", NO_TRACKING], ["+foo=bar", "not a setting of the run"]),
    # a dataset's setting where the dataset is not selected: the fix selects it (not Hydra's '+')
    (
        "plus-setting-of-unselected-dataset",
        ["dataset=[arith_mc]", "+dataset.compare_mc.limit=5", "plan_only=true"],
        ["dataset=[arith_mc,compare_mc] dataset.compare_mc.limit=5", "Fix:"],
    ),
    (
        "setting-of-unselected-dataset",
        ["dataset=[arith_mc]", "dataset.compare_mc.limit=5", "plan_only=true"],
        ["dataset 'compare_mc' is not selected", "dataset=[arith_mc,compare_mc]"],
    ),
    (
        "plusplus-key",
        ["++tier.gpus=8", NO_TRACKING],
        ["++tier.gpus=8", "Settings of tier", "gpus_per_node"],
    ),
    (
        "fewshot-over-pool",
        ["dataset=[arith_mc]", "dataset.arith_mc.num_fewshot=500", NO_TRACKING],
        ["num_fewshot=500", "200 few-shot example(s)", "num_fewshot=200 or less"],
    ),
    (
        "generic-model-no-checkpoint",
        ["model=hf", NO_TRACKING],
        ["model=hf needs model.pretrained=<value>", "Fix:"],
    ),
    (
        "generic-model-not-cached",
        ["model=hf", "model.pretrained=acme/nowhere", NO_TRACKING],
        ["hf download acme/nowhere config.json", "offline=false"],
    ),
    (
        "unknown-task",
        ["dataset=[arith_mc]", "dataset.arith_mc.task=arith_mcc", NO_TRACKING],
        ["'arith_mcc'", "Did you mean 'arith_mc'", "Fix:"],
    ),
    # wrong types
    ("type-int", ["strategy.tensor_parallel_size=two"], ["'two'", "tensor_parallel_size"]),
    ("type-float-for-int", ["dataset.arith_mc.num_fewshot=1.5"], ["1.5", "num_fewshot"]),
    ("type-bool", ["plan_only=maybe"], ["'maybe'", "plan_only"]),
    ("type-enum-engine", ["strategy.engine=torch"], ["'torch'", "hf, vllm"]),
    ("type-enum-quant", ["strategy.quantization=int3"], ["'int3'", "int8"]),
    ("type-enum-device", ["strategy.device=tpu"], ["'tpu'", "cuda"]),
    ("type-seed", ["seed=abc"], ["'abc'", "seed"]),
    # negative or zero sizes
    ("zero-batch", ["strategy.batch_size=0"], ["strategy.batch_size=0", "Fix:"]),
    ("word-batch", ["strategy.batch_size=autox"], ["strategy.batch_size=autox", "auto:N"]),
    (
        "engine-args-plan-owned",
        ["strategy.engine_args={tensor_parallel_size:2}"],
        ["strategy.engine_args.tensor_parallel_size", "strategy.tensor_parallel_size decides"],
    ),
    (
        "engine-args-misspelt-hf",
        ["strategy.engine_args={attn_implmentation:eager}"],
        ["attn_implmentation", "Did you mean 'attn_implementation'"],
    ),
    ("engine-args-list", ["strategy.engine_args=[1]"], ["strategy.engine_args=", "Fix:"]),
    ("zero-max-batch", ["strategy.max_batch_size=0"], ["strategy.max_batch_size=0", "Fix:"]),
    ("negative-tp", ["strategy.tensor_parallel_size=-1"], ["tensor_parallel_size=-1", "Fix:"]),
    ("zero-limit", ["dataset.arith_mc.limit=0"], ["dataset.arith_mc.limit=0", "Fix:"]),
    ("negative-fewshot", ["dataset.arith_mc.num_fewshot=-1"], ["num_fewshot=-1", "Fix:"]),
    ("utilization", ["strategy.gpu_memory_utilization=1.5"], ["gpu_memory_utilization=1.5"]),
    # (a registry model whose checkpoint is not here plans from its YAML figures)
    ("zero-layers", ["model=llama3_1_8b", "model.num_layers=0"], ["model.num_layers=0", "Fix:"]),
    ("no-dataset", ["dataset=[]"], ["no dataset selected", "Fix:"]),
    # deployments that cannot work
    (
        "tp-heads",
        ["strategy=tp4", "tier=medium"],
        ["attention heads (2) must be divisible by tensor parallel size (4)", "Fix:"],
    ),
    (
        "gpus-vs-tier",
        ["model=llama3_1_8b", "strategy=tp8", "tier=medium", "plan_only=true"],
        ["tensor parallel size (8) exceeds the 4 GPUs per node", "Fix:"],
    ),
    (
        "dp-vs-tier",
        ["model=llama3_1_8b", "strategy=dp", "tier=small", "plan_only=true"],
        ["needs 2 GPUs", "Fix:"],
    ),
    (
        "fp8-on-a100",
        ["model=llama3_1_8b", "strategy=fp8", "tier=small", "plan_only=true"],
        ["needs fp8 tensor cores", "strategy=int8"],
    ),
    (
        "int4-not-prequantized",
        [
            "model=llama3_1_8b",
            "strategy=vllm",
            "strategy.quantization=int4",
            "tier=small",
            "plan_only=true",
        ],
        ["AWQ or GPTQ", "Fix:"],
    ),
    ("quant-on-hf", ["strategy.quantization=int8"], ["engine hf loads weights unquantized"]),
    # a rule no tier mends is bad input under plan_only too, not "does not fit" (issue 35)
    (
        "tp-heads-plan-only",
        ["model=llama3_1_8b", "strategy=tp4", "strategy.tensor_parallel_size=3", "plan_only=true"],
        ["heads (32) must be divisible by tensor parallel size (3)", "REFUSED (bad input)"],
    ),
    (
        "engine-args-misspelt-plan-only",
        ["strategy.engine_args={attn_implmentation:eager}", "plan_only=true"],
        ["attn_implmentation", "REFUSED (bad input)"],
    ),
    # a stall limit typed below what one call of a healthy engine may take (issue 35)
    (
        "stall-limit-below-the-floor",
        ["strategy.stall_timeout_s=5"],
        ["strategy.stall_timeout_s=5: below the 15 s", "Fix: strategy.stall_timeout_s=15"],
    ),
    (
        "stall-limit-below-the-floor-plan-only",
        ["strategy.stall_timeout_s=5", "plan_only=true"],
        ["strategy.stall_timeout_s=5: below", "REFUSED (bad input)"],
    ),
    ("max-len", ["strategy.max_model_len=100000"], ["exceeds the context window", "256"]),
    (
        "does-not-fit",
        ["model=llama2_70b", "strategy=single", "tier=small", "plan_only=true"],
        ["DOES NOT FIT", "Fix: strategy=int8"],
    ),
    # (strategy=tp2 itself runs on this CPU with vLLM's CPU build: tests/engines/test_vllm.py)
    ("gpu-strategy-cpu-tier", ["strategy=tp2", "strategy.device=cuda"], ["no GPU", "Fix:"]),
    ("missing-weights", ["model.pretrained=plugins/models/nowhere"], ["does not exist", "Fix:"]),
    (
        "pretrained-is-a-file",
        ["model=hf", "model.pretrained={tasks}/arith_mc.yaml", "plan_only=true"],
        ["arith_mc.yaml is a file, not a checkpoint folder", "Fix:"],
    ),
    (
        "hub-not-cached",
        ["model=qwen3_8b", "strategy=single"],
        ["not in the local Hugging Face cache", "Fix:"],
    ),
    # task files and data
    (
        "broken-yaml",
        [
            "+task_paths=[{tasks}]",
            "dataset=[arith_mc]",
            "dataset.arith_mc.task=broken_task",
            NO_TRACKING,
        ],
        ["broken_task.yaml", "could not be read"],
    ),
    (
        "data-missing",
        ["task_paths=[{tasks}]", "dataset=[compare_mc]", NO_TRACKING],
        ["compare_mc.jsonl", "not found", "generate_data.py"],
    ),
    (
        "data-empty",
        ["task_paths=[{tasks}]", "dataset=[compare_mc]", NO_TRACKING],
        ["compare_mc.jsonl", "empty", "generate_data.py"],
    ),
    (
        "data-not-json",
        ["task_paths=[{tasks}]", "dataset=[compare_mc]", NO_TRACKING],
        ["compare_mc.jsonl:1 is not valid JSON", "generate_data.py"],
    ),
    (
        "data-missing-field",
        ["task_paths=[{tasks}]", "dataset=[compare_mc]", NO_TRACKING],
        ["lacks required field(s) ['label']", "generate_data.py"],
    ),
    ("task-path-missing", ["task_paths=[/nonexistent/tasks]"], ["no such folder", "Fix:"]),
    (
        "task-path-outside-roots",
        ["task_paths=[/usr/share]", NO_TRACKING],
        ["outside the allowed roots", "allowed_roots"],
    ),
    # environment
    ("output-not-writable", ["output_dir=/etc/hostname/run"], ["not a writable folder", "Fix:"]),
    ("outputs-root-not-writable", ["outputs_root=/proc/harness"], ["not a writable folder"]),
    ("bad-interpolation", ["model.name=${nothing}"], ["does not resolve", "nothing"]),
    # what a new user's day broke (issue 20)
    (
        "searchpath-without-scheme",
        ["hydra.searchpath=[tests/fixtures/conf]", "dataset=[arith_mc]"],
        ["has no scheme", "hydra.searchpath=[file://tests/fixtures/conf]"],
    ),
    (
        "searchpath-missing-folder",
        ["hydra.searchpath=[file:///nowhere/conf]"],
        ["hydra.searchpath entry 'file:///nowhere/conf': no such folder", "Fix:"],
    ),
    (
        "checkpoint-without-tokenizer",
        ["model=hf", "model.pretrained={tasks}/../ckpt", NO_TRACKING],
        ["has a config.json but no tokenizer", "tokenizer.json", "Fix:"],
    ),
    # paths are relative to where the user stands (the current directory), not the project
    (
        "pretrained-relative-to-cwd",
        ["model=hf", "model.pretrained=./plugins/models/tiny_char", "plan_only=true"],
        ["does not exist (a relative path starts at the current directory", "Fix:"],
    ),
    (
        "pretrained-folder-here-without-config",
        ["model=hf", "model.pretrained=ckpt/my_llama", "plan_only=true"],
        ["ckpt/my_llama has no config.json", "Fix:"],
    ),
    (
        "pretrained-neither-here-nor-cached",
        ["model=hf", "model.pretrained=ckpt/my_llama", "plan_only=true"],
        ["nor is there a folder ckpt/my_llama in the current directory", "hf download", "Fix:"],
    ),
    (
        "misspelt-metric",
        ["task_paths=[{tasks}]", "dataset=[arith_mc]", "dataset.arith_mc.task=arith_typo"],
        ["metric 'acuracy'", "Did you mean 'acc'", "Fix:"],
    ),
    # lm-eval's evaluation settings (harness/config/evaluation.py)
    (
        "multiturn-without-chat-template",
        ["fewshot_as_multiturn=true"],
        ["fewshot_as_multiturn=true", "apply_chat_template=true", "Fix:"],
    ),
    (
        "dataset-multiturn-without-chat-template",
        ["dataset.arith_mc.fewshot_as_multiturn=true"],
        ["dataset.arith_mc.fewshot_as_multiturn=true", "Fix:"],
    ),
    (
        "chat-template-of-a-base-model",
        ["apply_chat_template=true"],
        ["apply_chat_template=true", "has no chat template", "Fix:"],
    ),
    (
        "dataset-chat-template-of-a-base-model",
        ["dataset.arith_mc.apply_chat_template=true"],
        ["has no chat template", "apply_chat_template=false"],
    ),
    (
        "thinking-without-end-token",
        ["enable_thinking=true", "dataset=[reverse_gen]"],
        ["enable_thinking=true without think_end_token", "Fix:"],
    ),
    (
        "thinking-on-a-loglikelihood-task",
        ["enable_thinking=true", "think_end_token=END", "dataset=[arith_mc,reverse_gen]"],
        ["dataset 'arith_mc'", "log-likelihood", "Fix:"],
    ),
    ("chat-template-args-list", ["chat_template_args=[1]"], ["chat_template_args=", "Fix:"]),
    ("chat-template-number", ["apply_chat_template=3"], ["apply_chat_template=3", "Fix:"]),
    ("gen-kwargs-not-key-value", ['gen_kwargs="max_gen_toks"'], ["gen_kwargs=", "Fix:"]),
    ("gen-kwargs-number", ["dataset.reverse_gen.gen_kwargs=5"], ["gen_kwargs=5", "Fix:"]),
    (
        "gen-kwargs-unquoted-lm-eval-style",
        ["gen_kwargs=max_gen_toks=2", "plan_only=true"],
        [
            "gen_kwargs=max_gen_toks=2",
            "\"gen_kwargs='max_gen_toks=2'\"",
            "gen_kwargs={max_gen_toks:2}",
        ],
    ),
    (
        "samples-and-limit",
        ["dataset.arith_mc.samples=[0,1]", "dataset.arith_mc.limit=5"],
        ["dataset.arith_mc.samples", "limit=5", "Fix:"],
    ),
    ("samples-negative", ["dataset.arith_mc.samples=[-1]"], ["samples=[-1]", "Fix:"]),
    # typos found before the load (issue 35)
    (
        "gen-kwargs-misspelt-key",
        ["gen_kwargs='max_gen_tok=5'", "dataset=[reverse_gen]", NO_TRACKING],
        ["gen_kwargs key 'max_gen_tok'", "Did you mean 'max_gen_toks'", "Fix:"],
    ),
    (
        "dataset-gen-kwargs-misspelt-key",
        ["dataset=[reverse_gen]", "dataset.reverse_gen.gen_kwargs={temprature:0}", NO_TRACKING],
        ["dataset.reverse_gen.gen_kwargs key 'temprature'", "Did you mean 'temperature'"],
    ),
    (
        "samples-outside-the-task",
        ["dataset=[arith_mc]", "dataset.arith_mc.samples=[0,99999]", NO_TRACKING],
        ["dataset.arith_mc.samples=[0, 99999]", "[99999]", "documents", "Fix:"],
    ),
    (
        "chat-template-name-a-single-template-lacks",
        ["model=tiny_char_chat", "apply_chat_template=chatml", NO_TRACKING],
        ["apply_chat_template=chatml", "no chat template of that name", "Fix:"],
    ),
    (
        "chat-template-true-misspelt",
        ["model=tiny_char_chat", "apply_chat_template=ture", NO_TRACKING],
        ["apply_chat_template=ture", "Did you mean 'true'", "Fix:"],
    ),
    (
        "unsafe-code-unconfirmed",
        ["+task_paths=[{tasks}]", "dataset=[arith_mc]", "dataset.arith_mc.task=unsafe_arith"],
        ["unsafe_arith", "unsafe_code", "confirm_run_unsafe_code=true"],
    ),
    # a served model (strategy=endpoint): refused before any request, no server needed
    ("endpoint-no-url", ["strategy=endpoint", NO_TRACKING], ["strategy.base_url is not set"]),
    (
        "endpoint-unreachable",
        ["strategy=endpoint", "strategy.base_url=http://u:hunter2pw@127.0.0.1:9/v1", NO_TRACKING],
        ["http://***@127.0.0.1:9/v1", "cannot be reached", "Fix: start it"],
    ),
    (
        "endpoint-url-names-a-route",
        ["strategy=endpoint", "strategy.base_url=http://127.0.0.1:9/v1/completions", NO_TRACKING],
        ["names a route", "Fix: strategy.base_url=http://127.0.0.1:9/v1"],
    ),
    (
        "endpoint-url-on-another-engine",
        ["strategy=tp2", "strategy.base_url=http://127.0.0.1:9/v1"],
        ["strategy.base_url", "engine vllm", "Fix: strategy=endpoint"],
    ),
    (
        "endpoint-key-variable-not-secret",
        ["strategy=endpoint", "strategy.base_url=http://h:1/v1", "strategy.api_key_env=SERVER"],
        ["strategy.api_key_env='SERVER'", "masked", "Fix:"],
    ),
]


def broken_suite(tmp: Path, case: str) -> Path:
    """A copy of the bundled suite with the defect that ``case`` is about."""
    tasks = tmp / "tasks"
    shutil.copytree(PLUGINS_DIR / "tasks" / "synth", tasks)
    data = tasks / "data" / "compare_mc.jsonl"
    if case == "broken-yaml":
        (tasks / "broken_task.yaml").write_text("task: broken_task\ndoc_to_text: [unclosed\n")
    elif case == "data-missing":
        data.unlink()
    elif case == "data-empty":
        data.write_text("")
    elif case == "data-not-json":
        data.write_text("{not json\n")
    elif case == "checkpoint-without-tokenizer":  # a training checkpoint saved without one
        shutil.copytree(PLUGINS_DIR / "models" / "tiny_char", tmp / "ckpt")
        for name in ("tokenizer.json", "tokenizer_config.json"):
            (tmp / "ckpt" / name).unlink()
    elif case == "pretrained-folder-here-without-config":  # a folder of a hub id's shape here
        (tmp / "ckpt" / "my_llama").mkdir(parents=True)
    elif case == "misspelt-metric":
        text = (tasks / "arith_mc.yaml").read_text().replace("task: arith_mc", "task: arith_typo")
        (tasks / "arith_typo.yaml").write_text(text.replace("metric: acc\n", "metric: acuracy\n"))
    elif case == "unsafe-code-unconfirmed":  # a task that would execute the model's code
        text = (tasks / "arith_mc.yaml").read_text().replace("task: arith_mc", "task: unsafe_arith")
        (tasks / "unsafe_arith.yaml").write_text(text + "unsafe_code: true\n")
    elif case == "data-missing-field":
        data.write_text('{"query": "max(1,2)=", "choices": ["1", "2"]}\n')
    return tasks


@pytest.mark.parametrize("case,overrides,needles", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gives_a_clean_message(tmp_path, case, overrides, needles):
    tasks = broken_suite(tmp_path, case)
    args = [o.replace("{tasks}", str(tasks)) for o in overrides]
    proc = run_harness([*args, f"hydra.run.dir={tmp_path / 'run'}"], tmp_path, timeout=300)
    assert_clean_failure(proc, *needles)
    expected = 1 if case in MISFITS else 2  # bad input exits 2; "does not fit" 1 (README)
    assert proc.returncode == expected, proc.stdout[-2000:] + proc.stderr[-2000:]
    said = [p for p in problem_lines(proc.stdout + proc.stderr)]
    assert len(said) == len(set(said)), f"a problem said twice:\n{proc.stdout + proc.stderr}"


MISFITS = {"does-not-fit", "gpus-vs-tier", "dp-vs-tier", "fp8-on-a100"}
"""Plan-only cases whose config is valid but whose tier cannot hold it: exit 1, not 2."""


def problem_lines(text: str) -> list[str]:
    """The ``  - ...`` lines of every problem list in ``text``."""
    return [line for line in text.splitlines() if line.startswith("  - ")]


def test_the_matrix_is_at_least_thirty_cases():
    assert len(CASES) >= 30


@pytest.mark.parametrize(
    "override",
    ["strategy.tensor_parallel_size=abc", "dataset=[arith_mc", "dataset.arith_mc.limit=[1,2]"],
    ids=["wrong-type", "list-syntax", "list-for-a-number"],
)
def test_what_hydra_refuses_exits_2_like_every_bad_input(tmp_path, override):
    """Hydra's own refusals (a value of the wrong type, an override it cannot parse) exit 2, as
    every other bad input does; 1 stays "does not fit" and "a dataset failed"."""
    proc = run_harness([override, "plan_only=true", f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    assert proc.returncode == 2, proc.stdout[-1000:] + proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert "error: the command line does not compose" in proc.stderr
