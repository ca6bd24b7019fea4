"""Hub datasets on a node without the hub: the refusal names each repo and the command that
fetches it, fast, before any task is built; and the snapshot `hf download --repo-type dataset`
leaves is read offline, giving the same documents as the same files loaded from a folder.

The hub snapshot is written here in the layout `hf download` leaves (``datasets--org--name`` with
``refs/main`` and ``snapshots/<commit>``, a parquet file per split, the README's ``configs``
block); no network.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from harness.config.schema import to_run_config
from harness.errors import TaskError

REPO = "testorg/hubby"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
ROWS = {
    "easy": [{"q": f"{i}+1=", "choices": [str(i + 1), str(i + 2)], "label": 0} for i in range(6)],
    "hard": [{"q": f"{i}*2=", "choices": [str(i), str(2 * i)], "label": 1} for i in range(5)],
}
TASK = """task: hubby_{config}
dataset_path: {path}
dataset_name: {config}
output_type: multiple_choice
test_split: test
doc_to_text: "{{{{q}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: label
metric_list:
  - metric: acc
metadata:
  version: 1.0
"""
GROUPS = {  # a group with a task and a subgroup, as lm-eval's groups are laid out
    "_hubby.yaml": "group: hubby\ntask:\n  - hubby_easy\n  - hubby_sub\nmetadata:\n  version: 1\n",
    "_hubby_sub.yaml": "group: hubby_sub\ntask:\n  - hubby_hard\nmetadata:\n  version: 1\n",
}


def write_tasks(folder: Path, path: str) -> Path:
    folder.mkdir(parents=True)
    for config in ROWS:
        (folder / f"hubby_{config}.yaml").write_text(TASK.format(config=config, path=path))
    for name, text in GROUPS.items():
        (folder / name).write_text(text)
    return folder


def write_hub_snapshot(hub: Path) -> Path:
    """What `hf download testorg/hubby --repo-type dataset` leaves in HF_HOME/hub."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    repo = hub / ("datasets--" + REPO.replace("/", "--"))
    snapshot = repo / "snapshots" / COMMIT
    readme = ["---", "configs:"]
    for config, rows in ROWS.items():
        (snapshot / config).mkdir(parents=True)
        pq.write_table(
            pa.Table.from_pylist(rows), snapshot / config / "test-00000-of-00001.parquet"
        )
        readme += [f"- config_name: {config}", "  data_files:", "  - split: test"]
        readme += [f"    path: {config}/test-*.parquet"]
    (snapshot / "README.md").write_text("\n".join([*readme, "---", "# hubby", ""]))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    return snapshot


@pytest.fixture
def hf_home(tmp_path, monkeypatch):
    """An empty HF_HOME, offline, as on a fresh compute node; datasets' cache inside it."""
    import datasets.config

    home = tmp_path / "hf_home"
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HF_DATASETS_CACHE", raising=False)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", home / "datasets")
    return home


def run_of(compose_cfg, folder: Path, *tasks: str):
    names = ",".join(tasks)
    source = "hydra.searchpath=[lmeval://tasks]"  # any lm-eval task by its name, as the CLI adds
    return to_run_config(compose_cfg(f"dataset=[{names}]", f"task_paths=[{folder}]", source))


def test_missing_hub_data_is_refused_with_the_command_for_each_repo_fast(
    compose_cfg, hf_home, tmp_path
):
    from harness.evaluation.tasks import prepare_datasets

    run = run_of(compose_cfg, write_tasks(tmp_path / "tasks", REPO), "hubby", "arith_mc")
    assert run.offline
    started = time.process_time()  # CPU time: others' tests share the cores
    with pytest.raises(TaskError) as caught:
        prepare_datasets(run)
    took = time.process_time() - started
    text = str(caught.value)
    assert text.startswith("1 dataset cannot be evaluated:"), text  # arith_mc is bundled
    assert f"needs the Hugging Face dataset(s) {REPO} (config(s) easy, hard)" in text
    assert f"`hf download {REPO} --repo-type dataset`" in text
    assert str(hf_home / "hub") in text
    assert took < 5, took


def test_a_builtin_group_is_checked_without_indexing_every_builtin(hf_home):
    # mmlu: 57 subtasks of cais/mmlu, found by a text search of lm-eval's task folders.
    from lm_eval.tasks._index import TaskIndex

    from harness.evaluation.hub_data import builtin_folders, hub_data_of, missing_hub_data

    started = time.process_time()  # CPU time: others' tests share the cores
    index = TaskIndex.build(builtin_folders(["mmlu"]))
    wanted = hub_data_of("mmlu", index)
    took = time.process_time() - started
    assert {d.repo for d in wanted} == {"cais/mmlu"} and len(wanted) == 57
    assert "abstract_algebra" in {d.config for d in wanted}
    assert list(missing_hub_data({"mmlu": "mmlu"}, index)) == ["mmlu"]
    assert took < 5, took


def test_a_hub_snapshot_is_read_offline_as_the_same_files_from_a_folder(
    compose_cfg, hf_home, tmp_path
):
    from harness.evaluation.tasks import leaf_tasks, prepare_datasets

    snapshot = write_hub_snapshot(hf_home / "hub")
    from_hub = prepare_datasets(run_of(compose_cfg, write_tasks(tmp_path / "hub", REPO), "hubby"))
    local = write_tasks(tmp_path / "local", str(snapshot))
    from_folder = prepare_datasets(run_of(compose_cfg, local, "hubby"))

    def docs(prepared) -> dict[str, list]:
        return {t.config.task: list(t.eval_docs) for t in leaf_tasks(prepared["hubby"].task)}

    assert docs(from_hub) == docs(from_folder)
    assert docs(from_hub)["hubby_easy"] == ROWS["easy"]
    assert docs(from_hub)["hubby_hard"] == ROWS["hard"]
    # lm-eval's task definition is unchanged: it still names the repo.
    (easy,) = [t for t in leaf_tasks(from_hub["hubby"].task) if t.config.task == "hubby_easy"]
    assert easy.config.dataset_path == REPO


def test_the_refusal_lists_the_runs_other_problems_with_the_missing_data(
    compose_cfg, hf_home, tmp_path
):
    """Validation collects every error at once: the hub data an offline run lacks is refused
    together with another dataset's bad setting, not one run after the other."""
    from harness.errors import ConfigError
    from harness.runner.checked import make_checked_plan

    folder = write_tasks(tmp_path / "tasks", REPO)
    cfg = compose_cfg(
        "dataset=[hubby,arith_mc]",
        f"task_paths=[{folder}]",
        "dataset.arith_mc.num_fewshot=-1",
        "hydra.searchpath=[lmeval://tasks]",
        f"allowed_roots=[{tmp_path}]",
    )
    with pytest.raises(ConfigError) as caught:
        make_checked_plan(to_run_config(cfg))
    text = str(caught.value)
    assert text.startswith("2 configuration problems:"), text
    assert "dataset.arith_mc.num_fewshot=-1" in text
    assert f"`hf download {REPO} --repo-type dataset`" in text


BAD_METRIC = """task: badmetric
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
output_type: multiple_choice
test_split: test
doc_to_text: q
doc_to_choice: choices
doc_to_target: label
metric_list:
  - metric: acc_typo
"""


def test_datasets_lacking_data_are_refused_with_the_other_datasets_problems(
    compose_cfg, hf_home, tmp_path
):
    from harness.evaluation.tasks import prepare_datasets

    folder = write_tasks(tmp_path / "tasks", REPO)
    data = tmp_path / "bad.jsonl"
    data.write_text('{"q": "1+1=", "choices": ["2", "3"], "label": 0}\n')
    (folder / "badmetric.yaml").write_text(BAD_METRIC.format(data=data))
    with pytest.raises(TaskError) as caught:
        prepare_datasets(run_of(compose_cfg, folder, "hubby", "badmetric", "arith_mc"))
    text = str(caught.value)
    assert text.startswith("2 datasets cannot be evaluated:"), text
    assert f"`hf download {REPO} --repo-type dataset`" in text
    assert "acc_typo" in text


REFUSED_BARE = """
import atexit, resource, sys
def said():
    heavy = [m for m in ("datasets", "lm_eval.tasks", "pandas", "torch") if m in sys.modules]
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    print(f"HEAVY={heavy} CPU={cpu.ru_utime + cpu.ru_stime:.2f}", file=sys.stderr)
atexit.register(said)
sys.argv = ["harness", *sys.argv[1:]]
from harness.app import main
main()
"""


def test_an_offline_run_lacking_mmlu_and_mmlu_pro_is_refused_without_the_heavy_imports(
    tmp_path,
):
    """The refusal reads lm-eval's task files alone: neither its task manager nor `datasets`
    (nor pandas, torch) is imported, and it takes well under the issue's 5 s of CPU."""
    import re
    import sys

    from tests.conftest import run_offline

    args = ["dataset=[mmlu,mmlu_pro]", "offline=true", "tracking=none", f"output_dir={tmp_path}/r"]
    proc = run_offline([sys.executable, "-c", REFUSED_BARE, *args], tmp_path)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 2, text[-3000:]
    for line in ("hf download cais/mmlu --repo-type dataset", "TIGER-Lab/MMLU-Pro"):
        assert line in text, text[-3000:]
    found = re.search(r"HEAVY=(\[.*?\]) CPU=([\d.]+)", text)
    assert found, text[-3000:]
    assert found.group(1) == "[]", found.group(0)
    assert float(found.group(2)) < 5, found.group(0)


@pytest.mark.parametrize(
    "names", [["mmlu", "mmlu_pro"], ["arc_easy"], ["mmlu_pro_biology"], ["leaderboard"]]
)
def test_the_search_by_folder_name_finds_what_the_whole_tree_search_finds(names):
    """The top folders named like a task are searched first (``mmlu_pro_biology`` is not in
    ``mmlu/``: the whole tree then); the folders found are those a search of every file finds."""
    from harness.evaluation.hub_data import (
        builtin_folders,
        lm_eval_tasks_root,
        search_task_files,
    )

    everywhere = search_task_files([lm_eval_tasks_root()], names)
    assert builtin_folders(names) == sorted(set(everywhere.defining)), names
