"""A quiet console at the size people evaluate: a group of many subtasks read from `datasets`'
offline cache with truncated prompts, the HF engine in a process of its own, and vLLM. Each
run's output goes to a pipe (as to a file); its lines are counted. Warnings that repeat are one
counted line each on the console and every one of them is in harness.log.

The group is built here (an mmlu-shaped one needs the hub): eight subtasks of a dataset repo in
`datasets`' arrow cache, as a run with the hub reachable leaves it, whose prompts are longer than
the bundled model's 256 positions.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import run_harness

pytestmark = pytest.mark.slow

SUBTASKS = 8
DOCS = 3
REPO = "testorg/longq"
TASK = """task: longq_{i}
dataset_path: {repo}
dataset_name: c{i}
output_type: generate_until
test_split: test
doc_to_text: query
doc_to_target: answer
target_delimiter: ""
generation_kwargs:
  until: ["\\n"]
  max_gen_toks: 4
  do_sample: false
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""


def write_cached_group(tmp_path: Path) -> Path:
    """The group's task folder; its data in `datasets`' cache under tmp_path/hf_home (the
    offline environment's HF_HOME)."""
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets.packaged_modules.parquet.parquet import Parquet

    tasks = tmp_path / "tasks"
    tasks.mkdir()
    cache = tmp_path / "hf_home" / "datasets"
    for i in range(SUBTASKS):
        rows = [{"query": f"{i}{d}+" * 100 + "=", "answer": str(d)} for d in range(DOCS)]
        parquet = tmp_path / f"c{i}.parquet"
        pq.write_table(pa.Table.from_pylist(rows), parquet)
        built = Parquet(
            cache_dir=str(tmp_path / "build"), dataset_name="longq", config_name=f"c{i}",
            hash="0" * 16, data_files={"test": [str(parquet)]},
        )  # fmt: skip
        built.download_and_prepare()
        # Where an online run of `load_dataset("testorg/longq", "c<i>")` leaves it.
        where = Path(built.cache_dir)
        target = cache / "testorg___longq" / f"c{i}" / where.parent.name / where.name
        target.parent.mkdir(parents=True)
        shutil.move(str(where), target)
        (tasks / f"longq_{i}.yaml").write_text(TASK.format(i=i, repo=REPO))
    members = "".join(f"  - longq_{i}\n" for i in range(SUBTASKS))
    (tasks / "_longq.yaml").write_text(
        f"group: longq\ntask:\n{members}aggregate_metric_list:\n  - metric: exact_match\n"
        "metadata:\n  version: 1\n"
    )
    assert datasets  # imported for its packaged Parquet builder
    return tasks


def console_lines(proc) -> list[str]:
    lines = (proc.stdout + proc.stderr).splitlines()  # a progress bar's \r counts as a line too
    return [line for line in lines if "note: OMP_NUM_THREADS=" not in line]


def run_dir_log(run: Path) -> str:
    return (run / "harness.log").read_text()


def test_a_group_of_many_subtasks_keeps_the_console_quiet_and_the_log_whole(tmp_path):
    tasks = write_cached_group(tmp_path)
    run = tmp_path / "run"
    args = [f"task_paths=[{tasks}]", "dataset=[longq]", "tracking=none", f"output_dir={run}"]
    proc = run_harness(args, tmp_path)
    lines = console_lines(proc)
    text = "\n".join(lines)
    assert proc.returncode == 0, text[-3000:]
    assert f"datasets read {2 * SUBTASKS} offline cache notice(s)" in text, text
    log = run_dir_log(run)
    truncated = log.count("Left truncation applied")  # lm-eval warns once per batch
    assert truncated >= 1
    said = f"lm-eval truncated prompts to fit the model's length ({truncated} warning(s))"
    assert said in text, text
    for chatter in ("Left truncation applied", "cached version of the dataset since", "it/s"):
        assert chatter not in text, f"{chatter!r} on the console:\n{text}"
    assert len(lines) <= 14, text
    assert log.count("Using the latest cached version of the dataset") == SUBTASKS


def test_the_hf_engine_in_its_own_process_prints_nothing_of_its_own(tmp_path):
    run = tmp_path / "run"
    args = ["dataset=[arith_mc]", "dataset.arith_mc.limit=5", "tracking=none",
            "strategy.replica_backend=process", f"output_dir={run}"]  # fmt: skip
    proc = run_harness(args, tmp_path)
    lines = console_lines(proc)
    text = "\n".join(lines)
    assert proc.returncode == 0, text[-3000:]
    for chatter in ("Loading", "it/s", "leaked semaphore", "resource_tracker"):
        assert chatter not in text, f"{chatter!r} on the console:\n{text}"
    assert len(lines) <= 10, text


@pytest.mark.vllm
def test_a_vllm_run_keeps_its_start_up_log_off_the_console(tmp_path):
    run = tmp_path / "run"
    args = ["strategy=vllm", "dataset=[arith_mc]", "dataset.arith_mc.limit=5", "tracking=none",
            f"output_dir={run}"]  # fmt: skip
    proc = run_harness(args, tmp_path)
    lines = console_lines(proc)
    text = "\n".join(lines)
    assert proc.returncode == 0, text[-3000:]
    for chatter in ("INFO ", "it/s", "Loading", "resource_tracker"):
        assert chatter not in text, f"{chatter!r} on the console:\n{text}"
    assert len(lines) <= 14, text
    log = run_dir_log(run)
    assert "[harness.engine.output][INFO] [engine-VLLMEngine] (EngineCore pid=" in log, log[-3000:]
