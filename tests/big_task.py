"""A dataset big enough for a kill to land inside it: ``DOCS`` generated arithmetic questions of
four choices each (``REQUESTS`` loglikelihood requests), an lm-eval task whose data is a local
JSON file. The request-journal tests (tests/evaluation/test_journal.py, the SLURM requeue in
tests/sweep/test_sweeps.py) and benchmarks/journal_overhead.py's big task."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from harness.paths import PLUGINS_DIR
from tests.conftest import json_lines

DOCS = 3000
REQUESTS = DOCS * 4


def write_big_task(folder: Path, docs: int = DOCS) -> Path:
    """The task ``big_mc`` in ``folder``: ``docs`` arithmetic questions of four choices."""
    body = (
        "output_type: multiple_choice\ntest_split: test\ndoc_to_text: query\n"
        "doc_to_choice: choices\ndoc_to_target: label\ntarget_delimiter: ''\n"
        "metric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n"
        "  - metric: acc_norm\n    aggregation: mean\n    higher_is_better: true\n"
    )
    return _write_task(folder, "big_mc", "arith_mc", docs, body)


def write_big_generation_task(folder: Path, docs: int) -> Path:
    """The task ``big_gen`` in ``folder``: ``docs`` successor questions answered by generation
    (thousands a second with the bundled model on one core: 20,000 outlast SLURM's KillWait)."""
    body = (
        "output_type: generate_until\ntest_split: test\ndoc_to_text: query\n"
        "doc_to_target: answer\ntarget_delimiter: ''\n"
        'generation_kwargs:\n  until: ["\\n"]\n  max_gen_toks: 12\n  do_sample: false\n'
        "  temperature: 0.0\n"
        "metric_list:\n  - metric: exact_match\n    aggregation: mean\n    higher_is_better: true\n"
    )
    return _write_task(folder, "big_gen", "successor_gen", docs, body)


def _write_task(folder: Path, name: str, kind: str, docs: int, body: str) -> Path:
    """Task ``name`` in ``folder``: ``docs`` rows of the synth generator's ``kind`` as a local
    JSON file, and its YAML (``body``: what follows the data source)."""
    sys.path.insert(0, str(PLUGINS_DIR / "tasks" / "synth"))
    try:
        import generate_data
    finally:
        sys.path.pop(0)
    rows = generate_data.generate(kind, seed=77, n=docs)
    data = folder / f"{name}.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    source = f"task: {name}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {data}\n"
    (folder / f"{name}.yaml").write_text(source + body + "metadata:\n  version: 1.0\n")
    return folder


def journaled(out: Path) -> int:
    """Record lines in the journals under an ``outputs_root`` (read without harness's reader)."""
    paths = out.glob("store/*/journal/*.jsonl")
    return sum(1 for path in paths for line in json_lines(path) if "k" in line)
