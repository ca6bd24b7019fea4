"""The variant column and the document counts, from runs as the report reads them (no store):
what differs among the runs that have a setting, shortened, capped, the full settings kept."""

from __future__ import annotations

from harness.report.runs import DatasetRun, ParentRun
from harness.report.variant import MAX_VARIANT, cap, name_variants

NONE_KEYS = ("apply_chat_template", "gen_kwargs", "samples", "system_instruction", "task_path")


def parent(run_id: str, params: dict[str, str], tags: dict[str, str] | None = None) -> ParentRun:
    run = ParentRun(run_id, "m", "single", "FINISHED", 0, "", {}, params=params)
    run.tags = tags or {}
    return run


def dataset_params(name: str, limit: str, fewshot: str = "None") -> dict[str, str]:
    out = {f"dataset.{name}.{k}": "None" for k in NONE_KEYS}
    return out | {f"dataset.{name}.limit": limit, f"dataset.{name}.num_fewshot": fewshot}


def test_a_dataset_a_run_lacks_is_no_difference():
    """Six datasets, each run a different subset with every unset key None: the old variant
    named every key of every dataset; only the limit that differs is named now."""
    names = [f"ds{i}" for i in range(6)]
    runs = []
    for r in range(4):
        params = {"seed": "None", "model.pretrained": "/c"}
        for name in names[r : r + 3]:
            params |= dataset_params(name, "10.0" if r % 2 else "50.0")
        runs.append(parent(f"run{r}", params))
    named = name_variants(runs)
    shorts = [named[r.run_id].short for r in runs]  # alike where they share: the run tells apart
    assert shorts == [f"run run{r}, limit={n}" for r, n in enumerate((50, 10, 50, 10))]
    assert named["run1"].full == ", ".join(f"dataset.ds{i}.limit=10.0" for i in (1, 2, 3))


def test_alike_settings_differ_by_run_and_a_lone_run_has_none():
    a = parent("aaaaaaaa1", dataset_params("x", "5.0"))
    b = parent("bbbbbbbb2", dataset_params("x", "5.0") | dataset_params("y", "7.0"))
    alone = ParentRun("c", "other", "single", "FINISHED", 0, "", {}, params={"seed": "1"})
    named = name_variants([a, b, alone])
    assert named["aaaaaaaa1"].short == "run aaaaaaaa" and named["bbbbbbbb2"].short == "run bbbbbbbb"
    assert "c" not in named


def test_the_checkpoint_is_the_resolved_path_shortened_and_its_hash():
    typed = [("./ck", "/w/ck"), ("sub/../ck", "/w/ck"), ("/w/runA/step-5", "/w/runA/step-5")]
    runs = [
        parent(f"r{i}", {"model.pretrained": t}, {"checkpoint.path": p, "checkpoint.hash": "h1"})
        for i, (t, p) in enumerate(typed)
    ]
    runs.append(parent("r3", {"model.pretrained": "/w/runB/step-5"},
                       {"checkpoint.path": "/w/runB/step-5", "checkpoint.hash": "h2"}))  # fmt: skip
    named = name_variants(runs)
    assert named["r0"].short == "run r0, checkpoint=h1, pretrained=.../ck"  # one checkpoint
    assert named["r1"].short == "run r1, checkpoint=h1, pretrained=.../ck"
    assert named["r0"].full == "checkpoint.hash=h1, model.pretrained=/w/ck"
    assert named["r2"].short == "checkpoint=h1, pretrained=.../runA/step-5"
    assert named["r3"].short == "checkpoint=h2, pretrained=.../runB/step-5"
    assert named["r3"].full == "checkpoint.hash=h2, model.pretrained=/w/runB/step-5"


def test_a_long_variant_is_capped_and_counted():
    parts = [f"setting_{i}=value_{i}" for i in range(60)]
    text = cap(parts)
    assert len(text) <= MAX_VARIANT and text.endswith("more")
    kept = text.rsplit(", ", 1)[0].split(", ")
    assert kept == parts[: len(kept)] and text.endswith(f"+{60 - len(kept)} more")
    many = [parent(f"r{i}", {f"strategy.k{j}": str(i * j) for j in range(1, 41)}) for i in range(3)]
    for named in name_variants(many).values():
        assert len(named.short) <= MAX_VARIANT and named.full.count("=") == 40


def test_documents_of_a_task_and_of_a_group():
    task = DatasetRun("d", "c", "FINISHED", {}, {"task": "t"}, n_samples={"t": 50})
    assert task.documents() == 50
    tree = '{"g": ["a", "sub"], "sub": ["b", "c"]}'
    group = DatasetRun("g", "c", "FINISHED", {}, {"task": "g", "group_subtasks": tree})
    group.n_samples = {"a": 3, "b": 4, "c": 5}
    assert (group.documents(), group.documents("sub"), group.documents("b")) == (12, 9, 4)
    assert DatasetRun("f", "c", "FAILED", {}, {}).documents() is None
