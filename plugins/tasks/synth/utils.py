"""Loader for the offline ``synth`` task suite (cwd-independent).

Each YAML says ``custom_dataset: !function utils.load`` and
``dataset_kwargs: {file: <task>.jsonl}``; lm-eval 0.4.13 calls
``custom_dataset(**metadata, **dataset_kwargs)`` (``lm_eval/api/task.py``, ``download``),
so ``load`` receives ``file=...`` plus whatever metadata there is (``version``,
``--metadata`` JSON, model args) and ignores everything but ``file``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

DATA_DIR = Path(__file__).resolve().parent / "data"
REGEN = "regenerate it with: python plugins/tasks/synth/generate_data.py"

REQUIRED_FIELDS = {
    "arith_mc.jsonl": ("query", "choices", "label"),
    "compare_mc.jsonl": ("query", "choices", "label"),
    "reverse_gen.jsonl": ("query", "answer"),
    "successor_gen.jsonl": ("query", "answer"),
    "story_ppl.jsonl": ("text",),
}


def read_rows(file: str) -> list[dict[str, Any]]:
    """Read and check ``data/<file>``; raise FileNotFoundError / ValueError naming the path."""
    path = (DATA_DIR / file).resolve()
    if DATA_DIR not in path.parents:
        raise ValueError(
            f"synth task data file {file!r} lies outside {DATA_DIR}; name a file in it"
        )
    if not path.is_file():
        raise FileNotFoundError(f"synth task data file not found: {path}; {REGEN}")
    rows: list[dict[str, Any]] = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno} is not valid JSON ({e}); {REGEN}") from e
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{lineno} is not a JSON object; {REGEN}")
            missing = [k for k in REQUIRED_FIELDS.get(file, ()) if k not in row]
            if missing:
                raise ValueError(f"{path}:{lineno} lacks required field(s) {missing}; {REGEN}")
            rows.append(row)
    if not rows:
        raise ValueError(f"synth task data file is empty: {path}; {REGEN}")
    return rows


def load(file: str | None = None, **kwargs: Any):
    """``custom_dataset`` hook: return ``DatasetDict({"test": ...})`` for ``data/<file>``."""
    import datasets

    if not file:
        raise ValueError(
            "synth utils.load needs dataset_kwargs: {file: <task>.jsonl} in the task YAML"
        )
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(read_rows(file))})
