"""What a served model (``strategy=endpoint``) is asked, checked on the built tasks before any
request is sent.

A loglikelihood, multiple-choice or perplexity task needs the prompt's log-probabilities: a chat
API never returns them, and some completions servers answer without them (llama.cpp's scored
exactly chance on ARC), so such a task is refused by name instead of scored; a completions
server is asked once, with one echoed request, when such a task is in the run. A chat API takes
conversations only: every dataset sent to one needs a chat template.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from harness.config.evaluation import settings_for
from harness.errors import TaskError
from harness.evaluation.tasks import leaf_tasks

if TYPE_CHECKING:
    from harness.config.schema import RunConfig
    from harness.engines.remote.target import EndpointTarget
    from harness.evaluation.tasks import PreparedDataset
    from harness.planning.plan import Plan


def served_problems(
    run: RunConfig,
    plan: Plan,
    datasets: Mapping[str, PreparedDataset],
    target: EndpointTarget | None = None,
) -> list[str]:
    """Each dataset an endpoint cannot answer as asked (none for an engine of this node).

    Args:
        target: the endpoint; None: the one ``strategy.base_url`` names.
    """
    if plan.engine != "endpoint" and target is None:
        return []
    from harness.engines.remote.engine import target_of
    from harness.engines.remote.probe import (
        FIRST_ANSWER_TIMEOUT_S,
        probe_transport,
        request_type_problems,
    )

    target = target or target_of(plan)
    problems = []
    if target.api == "chat":
        for name, prepared in datasets.items():
            if not settings_for(run, prepared.config).apply_chat_template:
                problems.append(
                    f"dataset '{name}': strategy.api=chat sends conversations, but this dataset "
                    "applies no chat template (its prompts are plain text). Fix: "
                    f"apply_chat_template=true (or dataset.{name}.apply_chat_template=true), "
                    "or strategy.api=completions."
                )
    types = {
        name: [
            (str(getattr(leaf, "task_name", name)), str(getattr(leaf, "OUTPUT_TYPE", "")))
            for leaf in leaf_tasks(prepared.task)
        ]
        for name, prepared in datasets.items()
    }
    probe = probe_transport(target.base_url, target.api_key, FIRST_ANSWER_TIMEOUT_S)
    try:
        return problems + request_type_problems(target, types, probe)
    finally:
        probe.close()


def check_served(
    run: RunConfig,
    plan: Plan,
    datasets: Mapping[str, PreparedDataset],
    target: EndpointTarget | None = None,
) -> None:
    """Raise :class:`TaskError` (exit 2) listing every :func:`served_problems`."""
    problems = served_problems(run, plan, datasets, target)
    if problems:
        noun = "dataset" if len(problems) == 1 else "datasets"
        raise TaskError(
            f"{len(problems)} {noun} cannot be evaluated by the served model:\n"
            + "\n".join(f"  - {p}" for p in problems)
        )
