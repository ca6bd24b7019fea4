"""What tells rows of one model and strategy apart: the ``variant`` column.

A row's variant names the settings whose values differ among the runs of its model and strategy
that have them: a dataset a run did not evaluate has no keys in its params, and a key a run lacks
(that dataset, or an older harness's config) is no difference, so runs over different dataset
lists differ only where they share a setting and set it apart. The checkpoint is the path the run
resolved (``checkpoint.path``, else the plan's), never the path as typed, and its content hash
tells apart a folder whose files changed.

The variant is shortened to what tells the rows apart (``fewshot=2, limit=50``,
``pretrained=.../runA/checkpoint-500``) and never longer than ``MAX_VARIANT`` characters; the
full settings (every differing key by its full name) are kept beside it for the HTML's
``<details>`` and the CSV's ``settings`` column.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

MAX_VARIANT = 200
"""The most characters a variant cell holds; what does not fit is counted (``+3 more``)."""

IGNORED_PARAMS = (
    *("tracking.", "telemetry.", "plan.", "hydra."),
    *("outputs_root", "output_dir", "verbose", "rerun", "offline", "plan_only"),
)
"""Params that never tell two evaluations apart (where they are logged, how chatty; the plan is
what the config made of this node)."""

ALIASES = {"num_fewshot": "fewshot", "hash": "checkpoint"}
"""Short names of settings whose own name is longer than it needs to be."""

CHECKPOINT_HASH = "checkpoint.hash"
"""The pseudo-setting of a checkpoint's content hash (a tag of the run, not a param)."""


class Variable(Protocol):
    """What a run gives the variant: its id, model, strategy and settings."""

    run_id: str
    model: str
    strategy: str

    def settings(self) -> dict[str, str]: ...


@dataclass
class Named:
    """One run's variant."""

    short: str
    """What the table shows: the differences, shortened, at most ``MAX_VARIANT`` characters."""
    full: str
    """Every differing setting by its full name and value (``dataset.arith_mc.limit=10.0``)."""


def differing(group: Sequence[dict[str, str]]) -> list[str]:
    """The keys whose values differ among the runs (settings) that have them."""
    keys = sorted({k for settings in group for k in settings})
    return [k for k in keys if len({s[k] for s in group if k in s}) > 1]


def _number(value: str) -> str:
    """``10.0`` as ``10`` (lm-eval's limit is a float when it counts documents)."""
    head, dot, tail = value.partition(".")
    return head if dot and tail == "0" and head.lstrip("-").isdigit() else value


def _leaf(key: str) -> str:
    """A setting's short name: its last part, aliased (``dataset.x.num_fewshot`` -> fewshot)."""
    last = key.rsplit(".", 1)[-1]
    return ALIASES.get(last, last)


def _dataset_of(key: str) -> str | None:
    parts = key.split(".")
    return parts[1] if parts[0] == "dataset" and len(parts) > 2 else None


def _short_names(keys: list[str]) -> dict[str, str]:
    """Each setting outside ``dataset.`` by as few trailing parts as tell it from the others
    (``batch_size``; ``strategy.dtype`` beside ``model.dtype``)."""
    plain = [k for k in keys if _dataset_of(k) is None]
    names = {}
    for key in plain:
        parts = key.split(".")
        for n in range(1, len(parts) + 1):
            tail = parts[-n:]
            if not any(o != key and o.split(".")[-n:] == tail for o in plain):
                break
        names[key] = _leaf(key) if n == 1 else ".".join(tail)
    return names


def _path_tails(values: set[str]) -> dict[str, str]:
    """Each path by its shortest trailing parts that no other path ends with
    (``/data/runA/checkpoint-500`` -> ``.../runA/checkpoint-500``)."""
    tails = {}
    for value in values:
        parts = value.rstrip("/").split("/")
        for n in range(1, len(parts) + 1):
            tail = "/".join(parts[-n:])
            others = [v for v in values if v != value and v.rstrip("/").endswith("/" + tail)]
            if not others and tail != value.rstrip("/"):
                tails[value] = ".../" + tail
                break
        else:
            tails[value] = value
    return tails


def _short_parts(settings: dict[str, str], keys: list[str], tails: dict[str, str]) -> list[str]:
    """One run's differences, a dataset setting set alike on every dataset said once
    (``limit=50`` rather than ``a.limit=50, b.limit=50``)."""
    names = _short_names(keys)
    mine = [k for k in keys if k in settings]
    parts: list[str] = []
    done: set[str] = set()
    for key in mine:
        if key in done:
            continue
        value = tails.get(settings[key], _number(settings[key]))
        ds = _dataset_of(key)
        if ds is None:
            parts.append(f"{names[key]}={value}")
            done.add(key)
            continue
        alike = [k for k in mine if _dataset_of(k) is not None and _leaf(k) == _leaf(key)]
        if len({settings[k] for k in alike}) == 1:
            parts.append(f"{_leaf(key)}={value}")
            done.update(alike)
        else:
            parts.append(f"{ds}.{_leaf(key)}={value}")
            done.add(key)
    return parts


def cap(parts: list[str], limit: int = MAX_VARIANT) -> str:
    """``parts`` joined, cut where the next would pass ``limit`` with the rest counted."""
    text = ", ".join(parts)
    if len(text) <= limit:
        return text
    for kept in range(len(parts) - 1, -1, -1):
        more = f"+{len(parts) - kept} more"
        head = ", ".join(parts[:kept])
        candidate = f"{head}, {more}" if head else more
        if len(candidate) <= limit:
            return candidate
    return text[: limit - 1] + "…"


def name_group(runs: Sequence[Variable]) -> dict[str, Named]:
    """The variant of each run of one model and strategy, by run id."""
    every = [r.settings() for r in runs]
    keys = differing(every)
    paths = {s[k] for s in every for k in keys if k in s and s[k].startswith("/")}
    tails = _path_tails(paths)
    parts = {r.run_id: _short_parts(s, keys, tails) for r, s in zip(runs, every, strict=True)}
    shorts = [cap(parts[r.run_id]) for r in runs]
    named: dict[str, Named] = {}
    for run, settings, short in zip(runs, every, shorts, strict=True):
        if not short or shorts.count(short) > 1:  # alike where shared: the datasets differ
            short = cap([f"run {run.run_id[:8]}", *parts[run.run_id]])
        full = ", ".join(f"{k}={settings[k]}" for k in keys if k in settings)
        named[run.run_id] = Named(short, full)
    return named


def name_variants(runs: Sequence[Variable]) -> dict[str, Named]:
    """The variant of every run sharing its model and strategy with another, by run id (a run
    alone in its model and strategy has none)."""
    groups: dict[tuple[str, str], list[Variable]] = {}
    for run in runs:
        groups.setdefault((run.model, run.strategy), []).append(run)
    named: dict[str, Named] = {}
    for group in groups.values():
        if len(group) > 1:
            named.update(name_group(group))
    return named
