"""lm-eval's evaluation settings of one dataset: the run's, with the dataset's own on top.

The keys are lm-eval's own (``apply_chat_template``, ``fewshot_as_multiturn``,
``system_instruction``, ``gen_kwargs``, ``predict_only``, ``samples``, ``metadata``,
``confirm_run_unsafe_code``) and mean what its CLI's flags of the same names mean, defaults
included: a run that sets none of them evaluates exactly as before, and its stored results are
keyed as before (``EvalSettings.changed`` is empty).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from harness.config.schema import DatasetConfig, RunConfig
from harness.errors import number

PER_DATASET = (
    "apply_chat_template",
    "fewshot_as_multiturn",
    "system_instruction",
    "gen_kwargs",
    "predict_only",
)
"""Run-wide settings a dataset may set for itself (``dataset.<name>.<key>`` wins)."""


@dataclass(frozen=True)
class EvalSettings:
    """What one dataset's ``lm_eval.simple_evaluate`` call is given besides the task."""

    apply_chat_template: bool | str = False
    """False, True (the tokenizer's template) or a template's name."""
    fewshot_as_multiturn: bool = False
    """Few-shot examples as chat turns (only meaningful under a chat template)."""
    system_instruction: str | None = None
    """Text before every prompt (the system turn under a chat template)."""
    gen_kwargs: dict[str, Any] | None = None
    """Generation settings that update each generation task's own."""
    predict_only: bool = False
    """Outputs only, no metric."""
    samples: tuple[int, ...] | None = None
    """The document indices evaluated, or all."""
    metadata: dict[str, Any] | None = None
    """Extra task metadata."""

    def changed(self) -> dict[str, Any]:
        """The settings that differ from lm-eval's defaults (what keys a stored result)."""
        default = asdict(EvalSettings())
        changed = {k: v for k, v in asdict(self).items() if v != default[k]}
        return {k: list(v) if isinstance(v, tuple) else v for k, v in changed.items()}

    def lm_eval_kwargs(self, task_names: list[str]) -> dict[str, Any]:
        """The keyword arguments of ``simple_evaluate`` these settings are (metadata reaches
        the tasks when they are built, not here)."""
        return {
            "apply_chat_template": self.apply_chat_template,
            "fewshot_as_multiturn": self.fewshot_as_multiturn,
            "system_instruction": self.system_instruction,
            "gen_kwargs": self.gen_kwargs,
            "predict_only": self.predict_only,
            "samples": None
            if self.samples is None
            else {name: list(self.samples) for name in task_names},
        }


def parse_gen_kwargs(value: Any) -> dict[str, Any] | None:
    """``gen_kwargs`` as a mapping: a mapping as given, lm-eval's ``k=v,...`` string (or JSON)
    parsed by lm-eval's own CLI parser, None or empty as None.

    Raises:
        ValueError: a string lm-eval's parser refuses, or a value of another type.
    """
    if value is None or value == "" or value == {}:
        return None
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, str):
        from lm_eval._cli.utils import key_val_to_dict, try_parse_json

        parsed = try_parse_json(value)
        return dict(parsed) if isinstance(parsed, dict) else key_val_to_dict(value) or None
    raise ValueError(f"a mapping or a 'k=v,...' string, not {type(value).__name__}")


def _plain(value: Any) -> Any:
    """A value from OmegaConf (ListConfig, DictConfig) as plain Python."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple) or type(value).__name__ == "ListConfig":
        return [_plain(v) for v in value]
    return value


def _own_or_run(run: RunConfig, ds: DatasetConfig, key: str) -> Any:
    own = getattr(ds, key)
    return getattr(run, key) if own is None else own


def reasoning_args(run: RunConfig) -> dict[str, Any]:
    """The run's reasoning settings that are set, as lm-eval's HF and vLLM models take them
    (keyword arguments of the engine, built once for every dataset)."""
    args: dict[str, Any] = {}
    if run.enable_thinking is not None:
        args["enable_thinking"] = run.enable_thinking
    if run.think_end_token is not None:
        args["think_end_token"] = run.think_end_token
    if isinstance(run.chat_template_args, Mapping) and run.chat_template_args:
        args["chat_template_args"] = _plain(run.chat_template_args)
    return args


def engine_args(run: RunConfig) -> dict[str, Any]:
    """Every keyword the run adds to the engine: ``strategy.engine_args`` and the reasoning
    settings (``Plan.engine_args``)."""
    given = run.strategy.engine_args
    plain = _plain(given) if isinstance(given, Mapping) else {}
    return {**plain, **reasoning_args(run)}


def chat_templates_asked(run: RunConfig) -> set[Any]:
    """The chat templates the run's datasets apply (True: the tokenizer's own; a name)."""
    asked = {_own_or_run(run, ds, "apply_chat_template") for ds in run.dataset.values()}
    return {a for a in asked if a is True or (isinstance(a, str) and a.strip())}


def settings_for(run: RunConfig, ds: DatasetConfig) -> EvalSettings:
    """The dataset's settings: its own where it sets them, else the run's; ``gen_kwargs``
    merged (the dataset's keys win). Call ``evaluation_problems`` first: a value it refuses
    raises here."""
    chat = _own_or_run(run, ds, "apply_chat_template")
    multiturn = _own_or_run(run, ds, "fewshot_as_multiturn")
    if multiturn is None:  # lm-eval's CLI: on with a chat template
        multiturn = bool(chat)
    gen = {**(parse_gen_kwargs(run.gen_kwargs) or {}), **(parse_gen_kwargs(ds.gen_kwargs) or {})}
    return EvalSettings(
        apply_chat_template=chat,
        fewshot_as_multiturn=bool(multiturn),
        system_instruction=_own_or_run(run, ds, "system_instruction"),
        gen_kwargs=gen or None,
        predict_only=bool(_own_or_run(run, ds, "predict_only")),
        samples=None if ds.samples is None else tuple(int(i) for i in ds.samples),
        metadata=None if ds.metadata is None else _plain(ds.metadata),
    )


def evaluation_problems(run: RunConfig) -> list[str]:
    """Every broken rule of the evaluation settings, run-wide and per dataset, each with its fix
    (the rules lm-eval's CLI applies, said before anything is loaded)."""
    engine = str(getattr(run.strategy.engine, "value", run.strategy.engine))
    if engine == "endpoint" and str(getattr(run.strategy.api, "value", "")) == "chat":
        engine = "endpoint_chat"  # the chat API's parameters (harness/config/gen_kwargs.py)
    problems = _value_problems("", run.apply_chat_template, run.gen_kwargs, engine)
    if run.enable_thinking and not run.think_end_token:
        problems.append(
            "enable_thinking=true without think_end_token: the thinking must be cut off before "
            "scoring (lm-eval refuses it too). Fix: 'think_end_token=\"</think>\"' (the "
            "model's own end-of-thinking text)."
        )
    if run.chat_template_args is not None and not isinstance(run.chat_template_args, Mapping):
        problems.append(
            f"chat_template_args={run.chat_template_args!r}: must be a mapping. Fix: "
            "chat_template_args={reasoning_effort:low} (the keywords its template reads)."
        )
    for name, ds in run.dataset.items():
        where = f"dataset.{name}."
        problems += _value_problems(where, ds.apply_chat_template, ds.gen_kwargs, engine)
        chat = _own_or_run(run, ds, "apply_chat_template")
        if _own_or_run(run, ds, "fewshot_as_multiturn") is True and not chat:
            key = where if ds.fewshot_as_multiturn is not None else ""
            problems.append(
                f"{key}fewshot_as_multiturn=true: few-shot examples become chat turns only under "
                f"a chat template, and {name}'s apply_chat_template is false (lm-eval refuses "
                f"it too). Fix: apply_chat_template=true, or {key}fewshot_as_multiturn=false."
            )
        if ds.metadata is not None and not isinstance(ds.metadata, Mapping):
            problems.append(
                f"{where}metadata={ds.metadata!r}: must be a mapping of the task's metadata keys. "
                f"Fix: {where}metadata={{max_seq_lengths:[4096]}} (the keys its task reads)."
            )
        if ds.samples is not None:
            if ds.limit is not None:
                problems.append(
                    f"{where}samples and {where}limit={number(ds.limit)}: lm-eval takes one or the "
                    f"other. Fix: drop {where}limit (samples already picks the documents)."
                )
            if not ds.samples or any(int(i) < 0 for i in ds.samples):
                problems.append(
                    f"{where}samples={list(ds.samples)}: must list document indices, each 0 or "
                    f"more. Fix: {where}samples=[0,1,2] (or drop it to evaluate every document)."
                )
    return problems


def _value_problems(where: str, chat: Any, gen: Any, engine: str) -> list[str]:
    from harness.config.gen_kwargs import gen_kwargs_key_problems

    problems = []
    if not (chat is None or isinstance(chat, bool) or (isinstance(chat, str) and chat.strip())):
        problems.append(
            f"{where}apply_chat_template={chat!r}: must be true, false, or the name of one of "
            "the tokenizer's chat templates. Fix: apply_chat_template=true (its default template)."
        )
    try:
        parsed = parse_gen_kwargs(gen)
    except ValueError as err:
        problems.append(
            f"{where}gen_kwargs={gen!r}: {err}. Fix: a mapping, {where}gen_kwargs="
            '{max_gen_toks:256,until:["\\n\\n"]}, or lm-eval\'s string, '
            f"'{where}gen_kwargs=\"max_gen_toks=256,temperature=0\"'."
        )
        return problems
    return problems + gen_kwargs_key_problems(engine, where, parsed or {})
