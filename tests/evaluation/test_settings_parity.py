"""lm-eval's evaluation settings give exactly the numbers of lm-eval's own CLI with the same
flags, each flag alone and all together, on the bundled chat model (plugins/models/tiny_char_chat).

The harness evaluates every variant in one run on one resident engine: each variant is a dataset
of its own whose settings are per-dataset overrides (`dataset.<name>.<key>`), so one run also
checks that settings never leak from one dataset to the next. lm-eval's CLI runs once per variant.
"""

from __future__ import annotations

import gzip
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from harness.paths import PLUGINS_DIR
from tests.conftest import run_harness, run_lm_eval_cli
from tests.evaluation.in_flight import PLACES, recorded_at_once

pytestmark = pytest.mark.slow

CHAT_MODEL = PLUGINS_DIR / "models" / "tiny_char_chat"
SYSTEM = "Compute."
STOP = ["e"]

# name: (task, harness settings of the dataset, lm_eval flags). Few-shot examples and a limit
# keep each variant small; the flags are those of lm-eval's `run` command.
VARIANTS: dict[str, tuple[str, dict, list[str]]] = {
    "plain": ("arith_mc", {"num_fewshot": 2, "limit": 30}, ["--num_fewshot", "2", "--limit", "30"]),
    "chat": (
        "arith_mc",
        {"num_fewshot": 2, "limit": 30, "apply_chat_template": True},
        ["--num_fewshot", "2", "--limit", "30", "--apply_chat_template"],
    ),
    "chat_not_multiturn": (
        "arith_mc",
        {"num_fewshot": 2, "limit": 30, "apply_chat_template": True, "fewshot_as_multiturn": False},
        ["--num_fewshot", "2", "--limit", "30", "--apply_chat_template",
         "--fewshot_as_multiturn", "false"],
    ),
    "system": (
        "arith_mc",
        {"limit": 30, "system_instruction": SYSTEM},
        ["--limit", "30", "--system_instruction", SYSTEM],
    ),
    "gen": (
        "reverse_gen",
        {"limit": 30, "gen_kwargs": {"max_gen_toks": 3, "until": STOP}},
        ["--limit", "30", "--gen_kwargs", f"max_gen_toks=3,until={json.dumps(STOP)}"],
    ),
    "samples": (
        "arith_mc",
        {"samples": [0, 3, 7, 11, 19]},
        ["--samples", json.dumps({"arith_mc": [0, 3, 7, 11, 19]})],
    ),
    "predict": (
        "reverse_gen",
        {"limit": 10, "predict_only": True},
        ["--limit", "10", "--predict_only", "--log_samples"],
    ),
    "auto_batch": (  # evaluated in a run of its own with strategy.batch_size=auto
        "arith_mc",
        {"num_fewshot": 2, "limit": 30},
        ["--num_fewshot", "2", "--limit", "30", "--batch_size", "auto"],
    ),
    "all": (
        "reverse_gen",
        {
            "num_fewshot": 2,
            "limit": 30,
            "apply_chat_template": True,
            "fewshot_as_multiturn": True,
            "system_instruction": SYSTEM,
            "gen_kwargs": {"max_gen_toks": 4, "until": STOP},
        },
        ["--num_fewshot", "2", "--limit", "30", "--apply_chat_template", "--fewshot_as_multiturn",
         "--system_instruction", SYSTEM,
         "--gen_kwargs", f"max_gen_toks=4,until={json.dumps(STOP)}"],
    ),
}  # fmt: skip


def dataset_folder(root: Path) -> Path:
    """A config folder with one dataset option per variant (added with hydra.searchpath)."""
    folder = root / "conf" / "dataset"
    folder.mkdir(parents=True)
    for name, (task, settings, _) in VARIANTS.items():
        lines = [f"# @package dataset.{name}", f"task: {task}"]
        lines += [f"{key}: {json.dumps(value)}" for key, value in settings.items()]
        (folder / f"{name}.yaml").write_text("\n".join(lines) + "\n")
    return root / "conf"


def lm_eval_cli(name: str, out: Path) -> dict:
    task, _, flags = VARIANTS[name]
    args = [
        "run", "--model", "hf", "--model_args", f"pretrained={CHAT_MODEL},dtype=float32",
        "--tasks", task, "--include_path", str(PLUGINS_DIR / "tasks"), "--device", "cpu",
        "--batch_size", "32", "--output_path", str(out / name), *flags,
    ]  # fmt: skip
    proc = run_lm_eval_cli(args, out)
    assert proc.returncode == 0, f"{name}: {proc.stderr[-3000:]}"
    (results,) = (out / name).rglob("results_*.json")
    found = {"results": json.loads(results.read_text())}
    samples = list((out / name).rglob("samples_*.jsonl"))
    if samples:
        found["samples"] = [json.loads(line) for line in samples[0].read_text().splitlines()]
    return found


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("settings_parity")
    conf = dataset_folder(tmp)
    with ThreadPoolExecutor(max_workers=2) as pool:  # two CLI runs at once, one per core
        found = pool.map(lambda n: lm_eval_cli(n, tmp / "cli"), VARIANTS)
        cli = dict(zip(VARIANTS, found, strict=True))
    run_dir = tmp / "ours"  # not "harness": python -m would import that folder from the cwd
    proc = run_harness(
        [
            f"hydra.searchpath=[file://{conf}]",
            "model=tiny_char_chat",
            f"dataset=[{','.join(n for n in VARIANTS if n != 'auto_batch')}]",
            "strategy.batch_size=32",
            f"output_dir={run_dir}",
            f"outputs_root={tmp / 'outputs'}",
            "tracking=none",
        ],
        tmp,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    auto = run_harness(  # the batch size is the engine's: a run of its own
        [
            f"hydra.searchpath=[file://{conf}]",
            "model=tiny_char_chat",
            "dataset=[auto_batch]",
            "strategy.batch_size=auto",
            "strategy.engine_args={attn_implementation:eager}",  # reaches from_pretrained
            f"output_dir={run_dir}_auto",
            f"outputs_root={tmp / 'outputs'}",
            "tracking=none",
        ],
        tmp,
    )
    assert auto.returncode == 0, auto.stdout[-2000:] + auto.stderr[-3000:]
    return cli, run_dir


@pytest.fixture(scope="module")
def vllm_run(tmp_path_factory):
    """Every variant but the HF-only batch size, on vLLM's CPU build, in one run (tracked in
    MLflow: ``mlflow.db`` beside the run directory)."""
    tmp = tmp_path_factory.mktemp("settings_parity_vllm")
    conf = dataset_folder(tmp)
    run_dir = tmp / "ours_vllm"
    proc = run_harness(
        [
            f"hydra.searchpath=[file://{conf}]",
            "model=tiny_char_chat",
            f"dataset=[{','.join(n for n in VARIANTS if n != 'auto_batch')}]",
            "strategy=vllm",
            f"output_dir={run_dir}",
            f"outputs_root={tmp / 'outputs'}",
            "tracking=local",
            f"tracking.uri=sqlite:///{tmp / 'mlflow.db'}",
        ],
        tmp,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return run_dir


@pytest.mark.vllm
def test_vllm_gives_lm_eval_clis_numbers_for_every_setting(both, vllm_run):
    """The same settings through vLLM's CPU build (its own process, chat templates applied
    there): the numbers of lm-eval's CLI (whose HF model this tiny model matches exactly on
    vLLM, docs/architecture.md "Measured facts"), and predict_only's outputs alike."""
    cli, _ = both
    for name, (task, _, _) in VARIANTS.items():
        if name in ("auto_batch", "predict"):
            continue
        ours = json.loads((vllm_run / "results" / f"{name}.json").read_text())
        assert scores(ours, task) == scores(cli[name]["results"], task), name
    with gzip.open(vllm_run / "samples" / "predict.jsonl.gz", "rt") as f:
        ours_out = {s["doc_id"]: s["filtered_resps"] for s in map(json.loads, f)}
    assert ours_out == {s["doc_id"]: s["filtered_resps"] for s in cli["predict"]["samples"]}


@pytest.mark.vllm
def test_vllm_runs_every_dataset_at_once_and_records_it(vllm_run):
    """An engine of its own (vLLM): ``max_concurrent_datasets=auto`` plans every dataset of the
    run at once, all eight ran at once (their events overlap), and plan.json, summary.json and
    MLflow's ``plan.*`` say so."""
    at_once = len(VARIANTS) - 1  # all but auto_batch
    recorded = recorded_at_once(vllm_run, vllm_run.parent / "mlflow.db")
    assert recorded == dict.fromkeys(PLACES, at_once)


def scores(result: dict, task: str) -> dict[str, float]:
    entry = result["results"][task]
    return {k: v for k, v in entry.items() if "," in k and "stderr" not in k}


@pytest.mark.parametrize("name", [n for n in VARIANTS if n != "predict"])
def test_metrics_equal_lm_eval_cli(both, name):
    cli, run_dir = both
    task = VARIANTS[name][0]
    if name == "auto_batch":
        run_dir = run_dir.with_name(f"{run_dir.name}_auto")
    ours = json.loads((run_dir / "results" / f"{name}.json").read_text())
    theirs = scores(cli[name]["results"], task)
    assert theirs and scores(ours, task) == theirs
    if name == "auto_batch":  # the summary says what the batch size was asked and became
        engine = json.loads((run_dir / "summary.json").read_text())["engine"]
        assert engine["batch_size"] == "auto", engine
        found = engine["batch_sizes_found"]["loglikelihood"]  # searched once per length
        assert found and engine["batch_size_searches"] == len(found), engine
        assert engine["engine_config"] == {"attn_implementation": "eager"}  # read back


def test_each_setting_changes_the_numbers(both):
    """The variants differ from the plain evaluation: a setting that was silently dropped (by
    harness and lm-eval alike) would pass the parity test above, not this one."""
    _, run_dir = both

    def ours(name: str) -> dict:
        return scores(json.loads((run_dir / "results" / f"{name}.json").read_text()), "arith_mc")

    plain = ours("plain")
    for name in ("chat", "chat_not_multiturn", "system"):
        assert ours(name) != plain, name
    assert ours("chat") != ours("chat_not_multiturn")
    gen = json.loads((run_dir / "results" / "gen.json").read_text())
    assert scores(gen, "reverse_gen")["exact_match,none"] < 0.5  # 3 tokens cut every answer


def test_predict_only_outputs_equal_lm_eval_cli(both):
    cli, run_dir = both
    with gzip.open(run_dir / "samples" / "predict.jsonl.gz", "rt") as f:
        ours = {s["doc_id"]: s["filtered_resps"] for s in map(json.loads, f)}
    theirs = {s["doc_id"]: s["filtered_resps"] for s in cli["predict"]["samples"]}
    assert ours == theirs and len(ours) == 10
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["datasets"]["predict"]["status"] == "ok"
    assert summary["datasets"]["predict"]["evaluation"] == {"predict_only": True}
