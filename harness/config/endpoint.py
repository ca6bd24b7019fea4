"""The rules of ``strategy=endpoint``: a model already served over HTTP, checked as typed (the
server itself is probed before any dataset runs: ``harness.engines.remote.probe``).

Each message names the value, the rule and a fix.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from harness.config.schema import (
    EndpointApi,
    EngineKind,
    ExecutorBackend,
    Quantization,
    ReplicaBackend,
    StrategyConfig,
)
from harness.errors import number
from harness.secrets import env_secrets, mask


def endpoint_rules(strategy: StrategyConfig) -> list[str]:
    """What is wrong with an endpoint strategy as typed, or with endpoint settings given to
    another engine."""
    if strategy.engine != EngineKind.endpoint:
        if strategy.base_url:
            return [
                f"strategy.base_url={mask(strategy.base_url)!r} is given, but strategy "
                f"'{strategy.name}' uses engine {strategy.engine.value}, which loads the model "
                "itself. Fix: strategy=endpoint to evaluate the server, or drop base_url."
            ]
        return []
    return (
        base_url_problems(strategy.base_url)
        + _transport_problems(strategy)
        + _deployment_problems(strategy)
    )


def base_url_problems(base_url: str | None) -> list[str]:
    """``base_url`` is an http(s) URL with a host (its path is the API root, ``/v1``)."""
    if not base_url:
        return [
            "strategy.base_url is not set: strategy=endpoint evaluates a model served over "
            "HTTP. Fix: strategy.base_url=http://HOST:PORT/v1 (the server's OpenAI API root)."
        ]
    shown = mask(base_url)
    try:
        parts = urlsplit(base_url)
        parts.port  # noqa: B018 - raises ValueError on a port that is no number
    except ValueError as err:
        return [f"strategy.base_url={shown!r}: not a URL ({err}). Fix: http://HOST:PORT/v1."]
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return [
            f"strategy.base_url={shown!r}: must be an http:// or https:// URL with a host. "
            "Fix: strategy.base_url=http://HOST:PORT/v1."
        ]
    if parts.path.rstrip("/").endswith(("/completions", "/chat/completions")):
        root = shown[: shown.rindex("/v1") + 3] if "/v1" in shown else "http://HOST:PORT/v1"
        return [
            f"strategy.base_url={shown!r}: names a route; harness adds /completions or "
            f"/chat/completions itself (strategy.api). Fix: strategy.base_url={root}."
        ]
    return []


def _transport_problems(strategy: StrategyConfig) -> list[str]:
    problems = []
    for key, least in (("num_concurrent", 1), ("max_retries", 1)):
        value = getattr(strategy, key)
        if value < least:
            problems.append(
                f"strategy.{key}={value}: must be at least {least}. Fix: strategy.{key}="
                f"{8 if key == 'num_concurrent' else 5}."
            )
    if not strategy.timeout > 0:
        problems.append(
            f"strategy.timeout={number(strategy.timeout)}: must be a positive number of seconds. "
            "Fix: strategy.timeout=300."
        )
    if not strategy.retry_wait_s >= 0:
        problems.append(
            f"strategy.retry_wait_s={number(strategy.retry_wait_s)}: must be 0 or more seconds. "
            "Fix: strategy.retry_wait_s=1."
        )
    name = strategy.api_key_env
    if not name or not env_secrets({name: "x" * 16}):
        problems.append(
            f"strategy.api_key_env={name!r}: the API key's environment variable must have a "
            "name that says it holds a secret (…API_KEY, …TOKEN), so that its value is masked in "
            "every record. Fix: export the key as, e.g., MY_SERVER_API_KEY and set "
            "strategy.api_key_env=MY_SERVER_API_KEY (default OPENAI_API_KEY)."
        )
    batch = strategy.batch_size
    if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
        problems.append(
            f"strategy.batch_size={batch}: an endpoint sends this many prompts in one HTTP "
            "request, a number of at least 1 (no auto: the server batches itself). Fix: "
            "strategy.batch_size=8."
        )
    elif strategy.api == EndpointApi.chat and batch != 1:
        problems.append(
            f"strategy.batch_size={batch}: a chat API takes one conversation per request. "
            "Fix: strategy.batch_size=1 with strategy.api=chat."
        )
    return problems


def _deployment_problems(strategy: StrategyConfig) -> list[str]:
    """The server decides its own deployment: nothing of it is set here."""
    name = strategy.name
    sizes = {
        "tensor_parallel_size": strategy.tensor_parallel_size,
        "pipeline_parallel_size": strategy.pipeline_parallel_size,
        "data_parallel_size": strategy.data_parallel_size,
    }
    problems = [
        f"strategy.{key}={value}: strategy '{name}' evaluates a server that is already "
        "deployed; its parallelism is the server's. Fix: strategy.{key}=1 (start the server "
        "with the sizes you want, or use `python -m harness.serve`).".replace("{key}", key)
        for key, value in sizes.items()
        if value != 1
    ]
    if strategy.quantization != Quantization.none:
        problems.append(
            f"strategy.quantization={strategy.quantization.value}: the server loaded the "
            "weights; harness cannot quantize them. Fix: strategy.quantization=none."
        )
    if strategy.executor_backend != ExecutorBackend.auto:
        problems.append(
            f"strategy.executor_backend={strategy.executor_backend.value}: vLLM's launcher of "
            "workers; an endpoint has none here. Fix: strategy.executor_backend=auto."
        )
    if strategy.replica_backend != ReplicaBackend.auto:
        problems.append(
            f"strategy.replica_backend={strategy.replica_backend.value}: an endpoint engine is "
            "an HTTP client in this process. Fix: strategy.replica_backend=auto."
        )
    if strategy.engine_args:
        problems.append(
            f"strategy.engine_args={strategy.engine_args!r}: an endpoint loads no engine "
            "here. Fix: drop strategy.engine_args (give engine arguments to the server)."
        )
    return problems
