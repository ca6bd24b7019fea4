"""What is asked of a server before any dataset runs, and the health check's request.

``endpoint_problems(plan)`` (the endpoint's preflight, ``harness.engines.engine_problems``): the
server is reachable and accepts the key, serves the model id, its context holds the plan's
``max_model_len``, and its tokenizer agrees with the model group's on a probe text (vLLM's
``/tokenize``, else an echoed completion's prompt tokens: ``tokenizer_check.py``).
``request_type_problems`` (once the datasets' tasks are built): a loglikelihood or perplexity task
is asked only of an endpoint that returns prompt log-probabilities; a chat API
never does, and a completions server is probed with one echoed request. Each problem names the
value, the rule and the fix; nothing here sends a dataset's request.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.engines.remote.target import EndpointTarget
from harness.engines.remote.transport import EndpointError, EndpointGone, Transport
from harness.errors import did_you_mean
from harness.paths import resolve_project_path
from harness.secrets import mask

if TYPE_CHECKING:
    from harness.planning.plan import Plan

log = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 15.0
"""Longest a probe's request may take (no model answers these but the prompt-logprob probe)."""
FIRST_ANSWER_TIMEOUT_S = 300.0
"""Longest the prompt-logprob probe may take: a fresh vLLM server's first request warms it up."""
SCORED_TYPES = ("loglikelihood", "multiple_choice", "loglikelihood_rolling")
"""lm-eval's output types answered from prompt log-probabilities."""


def tokenizer_source(plan: Plan) -> str:
    """The model group's tokenizer: its local folder, else its hub id."""
    pretrained = plan.model_used.pretrained
    local = resolve_project_path(pretrained)
    return str(local) if local.is_dir() else pretrained


def load_tokenizer(plan: Plan) -> Any:
    """The model group's tokenizer (``tokenizer_source``), as ``AutoTokenizer`` would load it.

    A local folder whose ``tokenizer_config.json`` names a fast tokenizer class is loaded by that
    class directly: importing ``AutoTokenizer`` imports transformers' whole model registry and
    its generation code (about four times the import time of the class alone, measured here),
    which an endpoint, that runs no model, never needs. Anything else goes through
    ``AutoTokenizer``."""
    import transformers

    model = plan.model_used
    source = tokenizer_source(plan)
    named = _fast_class(source)
    loader = getattr(transformers, named) if named else None
    if loader is None:
        from transformers import AutoTokenizer

        loader = AutoTokenizer
    return loader.from_pretrained(
        source, revision=model.revision, trust_remote_code=model.trust_remote_code
    )


def _fast_class(source: str) -> str | None:
    """The fast tokenizer class a local folder's ``tokenizer_config.json`` names, or None."""
    config = Path(source) / "tokenizer_config.json"
    try:
        named = json.loads(config.read_text(encoding="utf-8")).get("tokenizer_class")
    except (OSError, ValueError, AttributeError):
        return None
    return named if isinstance(named, str) and named.endswith("Fast") else None


def probe_transport(
    base_url: str, api_key: str | None, timeout: float = PROBE_TIMEOUT_S
) -> Transport:
    """A transport for probes: three quick tries (a 429 is no refusal), ``timeout`` each."""
    return Transport(base_url, api_key, timeout, tries=3, wait_s=0.25, concurrency=1)


def ping(transport: Transport, target: EndpointTarget, timeout: float) -> Any:
    """The health check: one greedy token after a one-character prompt, through the model."""
    if target.api == "chat":
        route = "chat/completions"
        body: dict[str, Any] = {"messages": [{"role": "user", "content": "1"}]}
    else:
        route, body = "completions", {"prompt": "1"}
    body |= {"model": target.model_id, "max_tokens": 1, "temperature": 0}
    return transport.request("POST", route, body, within=timeout)


def models_of(transport: Transport) -> list[dict[str, Any]]:
    """The server's ``/v1/models`` entries."""
    listed = transport.request("GET", "models", within=PROBE_TIMEOUT_S * 2)
    data = listed.get("data") if isinstance(listed, dict) else None
    return [m for m in data or [] if isinstance(m, dict)]


def served_model_id(base_url: str, api_key: str | None) -> str:
    """The server's only model id (the preflight refused a server with several, or none)."""
    transport = probe_transport(base_url, api_key)
    try:
        ids = [str(m.get("id")) for m in models_of(transport)]
    finally:
        transport.close()
    if len(ids) != 1:
        raise EndpointError(f"{mask(base_url)} serves {len(ids)} models: set strategy.model_id")
    return ids[0]


def server_facts(transport: Transport, model_id: str) -> dict[str, Any]:
    """What the server says of itself, for the record: its entry for the model (``id``,
    ``max_model_len``, ``owned_by``, ``root``) and its version (vLLM's ``/version``)."""
    facts: dict[str, Any] = {}
    for entry in models_of(transport):
        if entry.get("id") == model_id:
            keep = ("id", "max_model_len", "owned_by", "root", "created")
            facts = {k: entry[k] for k in keep if k in entry}
            if "root" in facts:  # a path or URL the server loaded from
                facts["root"] = mask(str(facts["root"]))
    try:
        version = transport.request("GET", "/version", within=PROBE_TIMEOUT_S)
        facts["version"] = version.get("version") if isinstance(version, dict) else None
    except (EndpointError, EndpointGone):
        facts["version"] = None  # not vLLM: no /version
    return facts


def endpoint_problems(plan: Plan) -> list[str]:
    """The server a ``strategy=endpoint`` plan names, probed (see the module)."""
    strategy = plan.strategy_used
    if not strategy.base_url:
        return []  # the config's rules said so
    url = mask(strategy.base_url)
    key = os.environ.get(strategy.api_key_env) or None
    transport = probe_transport(strategy.base_url, key)
    try:
        try:
            models = models_of(transport)
        except EndpointGone as err:
            return [_unreachable(url, err)]
        except EndpointError as err:
            return [_refused(url, err, strategy.api_key_env, key is not None)]
        chosen, problems = _model_entry(url, strategy.model_id, models)
        if chosen is None:
            return problems
        problems += _context_problems(url, chosen, plan)
        problems += tokenizer_problems(transport, str(chosen["id"]), plan)
        return problems
    finally:
        transport.close()


def _unreachable(url: str, err: Exception) -> str:
    return (
        f"strategy.base_url={url}: the server cannot be reached ({err}). Fix: start it (vLLM: "
        "python -m vllm.entrypoints.openai.api_server --model ... --port PORT; or python -m "
        "harness.serve), or correct strategy.base_url (http://HOST:PORT/v1)."
    )


def _refused(url: str, err: Exception, key_env: str, has_key: bool) -> str:
    text = str(err)
    if " 401" in text or " 403" in text:
        given = f"${key_env} is sent" if has_key else f"${key_env} is not set"
        return (
            f"strategy.base_url={url}: the server refuses the request ({text}); {given}. Fix: "
            f"export the server's API key as {key_env} (strategy.api_key_env names the variable)."
        )
    return (
        f"strategy.base_url={url}: /models is not an OpenAI-compatible answer ({text}). Fix: "
        "point strategy.base_url at the server's API root (http://HOST:PORT/v1)."
    )


def _model_entry(
    url: str, model_id: str | None, models: list[dict[str, Any]]
) -> tuple[dict[str, Any] | None, list[str]]:
    ids = [str(m.get("id")) for m in models]
    if model_id is None:
        if len(models) == 1:
            return models[0], []
        return None, [
            f"strategy.model_id is not set and the server at {url} serves {len(ids)} models "
            f"({', '.join(ids) or 'none'}): which one is meant is unclear. Fix: "
            f"strategy.model_id=<one of them>."
        ]
    for entry in models:
        if entry.get("id") == model_id:
            return entry, []
    return None, [
        f"strategy.model_id={model_id!r}: the server at {url} does not serve it (it serves "
        f"{', '.join(ids) or 'no model'}).{did_you_mean(model_id, ids)} Fix: strategy.model_id="
        f"{ids[0] if ids else '<its id>'}, or the server that serves {model_id!r}."
    ]


def _context_problems(url: str, entry: dict[str, Any], plan: Plan) -> list[str]:
    served = entry.get("max_model_len")
    if not isinstance(served, int) or served >= plan.max_model_len:
        return []
    return [
        f"the server at {url} serves {entry.get('id')!r} with a context of {served} tokens "
        f"(max_model_len), less than the {plan.max_model_len} the plan evaluates with "
        f"(strategy.max_model_len, else model.context_window): prompts and max_gen_toks would "
        f"not fit. Fix: strategy.max_model_len={served}, or start the server with "
        f"--max-model-len {plan.max_model_len}."
    ]


def tokenizer_problems(transport: Transport, model_id: str, plan: Plan) -> list[str]:
    """The server's tokens for a probe text against the model group's tokenizer
    (``harness.engines.remote.tokenizer_check``: ``/tokenize``, else an echoed completion); a
    server where neither answers cannot be compared (a warning and the record, no refusal)."""
    from harness.engines.remote.tokenizer_check import check_tokenizer

    model = plan.model_used
    source = tokenizer_source(plan)
    check = check_tokenizer(transport, model_id, load_tokenizer(plan), source)
    if not check.differs:
        return []
    return [
        f"the server's tokenizer differs from model '{model.name}''s ({source}): the probe text "
        f"is {check.served} token(s) there and {check.local} here ({check.verdict}), so "
        "prompts, truncation and token counts would not be what the server reads. Fix: "
        "model=<the model the server serves> (or model.pretrained=<its checkpoint>), or the "
        "server of this model."
    ]


def request_type_problems(
    target: EndpointTarget, types: Mapping[str, Sequence[tuple[str, str]]], probe: Transport
) -> list[str]:
    """Each dataset whose tasks need prompt log-probabilities (``types``: dataset -> (task,
    output type) pairs) from an endpoint that cannot return them, by name."""
    scored = {
        name: sorted({task for task, kind in pairs if kind in SCORED_TYPES})
        for name, pairs in types.items()
    }
    scored = {name: tasks for name, tasks in scored.items() if tasks}
    if not scored:
        return []
    if target.api == "chat":
        why = "a chat API returns no prompt log-probabilities (scoring them would be chance)"
        fix = "strategy.api=completions (the server's /v1/completions)"
    else:
        problem = _echo_problem(target, probe)
        if problem is None:
            return []
        why = f"the server returns no prompt log-probabilities: {problem}"
        fix = "a completions server that echoes prompt logprobs (vLLM, SGLang)"
    return [
        f"dataset '{name}': task(s) {', '.join(tasks)} score prompt log-probabilities "
        f"(loglikelihood, multiple choice or perplexity), but {why}. Fix: {fix}, or drop "
        f"dataset '{name}' (generation tasks only)."
        for name, tasks in scored.items()
    ]


def _echo_problem(target: EndpointTarget, probe: Transport) -> str | None:
    from harness.engines.remote.lm import prompt_logprobs_problem

    prompt = "1 + 1 = 2"
    body = {
        "model": target.model_id,
        "prompt": prompt,
        "max_tokens": 1,
        "temperature": 0,
        "logprobs": 1,
        "echo": True,
    }
    try:
        answer = probe.request("POST", "completions", body, within=FIRST_ANSWER_TIMEOUT_S)
    except (EndpointError, EndpointGone) as err:
        return f"an echoed request failed ({err})"
    problem = prompt_logprobs_problem(answer, None)
    if problem is not None:
        return problem
    logprobs = answer["choices"][0]["logprobs"]["token_logprobs"]
    if len(logprobs) < 2:
        return f"log-probabilities for {len(logprobs)} token(s) of the prompt {prompt!r}"
    return None
