"""A model served by vLLM's own OpenAI server (the CPU build, on 127.0.0.1) as the run's engine:
``python -m harness strategy=endpoint strategy.base_url=...``.

One server for the whole session (``tests/engines/conftest.py``); what misbehaves is a small proxy
in front of it (``tests/endpoint_proxy.py``), never a fake of the server. Checked:

- the five bundled datasets (loglikelihood, rolling loglikelihood, generation), one after another
  and at once, give exactly the in-process vLLM engine's metrics, and the generation tasks the
  same answer for every sample;
- the server's facts are recorded (summary.json), the URL's credentials and the API key nowhere;
- a proxy answering 429 to every fifth request and delaying some: the same metrics, every retry
  counted (per dataset, in the summary and on the console);
- a chat API answers generation tasks (lm-eval's ``local-chat-completions`` path);
- a wrong model id, a chat API asked for a loglikelihood task, a server whose tokenizer differs,
  one whose context is shorter than the plan's: refused before any request, exit 2, naming the
  fix;
- a foreign endpoint that goes away during a dataset: that dataset fails with the reason, the
  others finish, exit 1; the rerun takes its answered requests from the journal, metrics equal.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import BUNDLED_TASKS, offline_env
from tests.endpoint_proxy import Proxy
from tests.engines.conftest import MODEL, VLLMServer

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

RUN_TIMEOUT = 600
GENERATION = ("reverse_gen", "successor_gen")
KEY = "sk-harness-endpoint-test-0123456789abcdef"
"""An API key in the environment (vLLM without --api-key ignores it): it must appear nowhere."""


def run(
    root: Path, *args: str, env: dict[str, str] | None = None, name: str = "run"
) -> dict[str, Any]:
    """``python -m harness`` to its end: exit code, output, and summary.json when written (its
    run directory ``root/name``, its result store under ``root``)."""
    root.mkdir(parents=True, exist_ok=True)
    run_dir = root / name
    command = [
        sys.executable,
        "-m",
        "harness",
        "tracking=none",
        "seed=1234",
        "log_samples=true",
        f"outputs_root={root / 'outputs'}",
        f"output_dir={run_dir}",
        *args,
    ]
    started = time.perf_counter()
    proc = subprocess.run(
        command,
        cwd=root,
        env=offline_env(root) | (env or {}),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )
    summary_file = run_dir / "summary.json"
    return {
        "code": proc.returncode,
        "out": proc.stdout + proc.stderr,
        "wall_s": time.perf_counter() - started,
        "run_dir": run_dir,
        "summary": json.loads(summary_file.read_text()) if summary_file.is_file() else None,
    }


def endpoint(url: str, *args: str) -> list[str]:
    return ["strategy=endpoint", f"strategy.base_url={url}", *args]


def datasets(*names: str) -> str:
    return f"dataset=[{','.join(names)}]"


def metrics(result: dict[str, Any]) -> dict[str, dict[str, float]]:
    return {name: d["metrics"] for name, d in result["summary"]["datasets"].items()}


def answers(result: dict[str, Any], name: str) -> list[Any]:
    """Each sample's filtered answer of a dataset, in document order."""
    import gzip

    path = Path(result["summary"]["datasets"][name]["samples_file"])
    with gzip.open(path, "rt") as lines:
        rows = [json.loads(line) for line in lines]
    return [r["filtered_resps"] for r in sorted(rows, key=lambda r: r["doc_id"])]


def ok(result: dict[str, Any]) -> dict[str, Any]:
    assert result["code"] == 0, result["out"][-5000:]
    return result


@pytest.fixture(scope="module")
def in_process(tmp_path_factory) -> dict[str, Any]:
    """The reference: the in-process vLLM engine on the five bundled datasets."""
    return ok(run(tmp_path_factory.mktemp("vllm"), "strategy=vllm", datasets(*BUNDLED_TASKS)))


@pytest.fixture(scope="module")
def one_after_another(vllm_server: VLLMServer, tmp_path_factory) -> dict[str, Any]:
    args = endpoint(vllm_server.base_url, "strategy.num_concurrent=1", "strategy.batch_size=1")
    root = tmp_path_factory.mktemp("sequential")
    return ok(run(root, *args, datasets(*BUNDLED_TASKS), "max_concurrent_datasets=1"))


@pytest.fixture(scope="module")
def at_once(vllm_server: VLLMServer, tmp_path_factory) -> dict[str, Any]:
    """Every dataset at once, the URL carrying credentials and a key in the environment."""
    url = vllm_server.base_url.replace("http://", "http://tester:pw-s3cret-77@")
    root = tmp_path_factory.mktemp("at_once")
    return ok(run(root, *endpoint(url), datasets(*BUNDLED_TASKS), env={"OPENAI_API_KEY": KEY}))


def test_served_metrics_equal_the_in_process_vllm_engine(in_process, one_after_another, at_once):
    assert metrics(one_after_another) == metrics(in_process)
    assert metrics(at_once) == metrics(in_process)
    for name in GENERATION:
        assert answers(one_after_another, name) == answers(in_process, name)
        assert answers(at_once, name) == answers(in_process, name)
    assert "5 datasets at once" in at_once["out"]


def test_the_record_holds_the_servers_facts_and_no_secret(vllm_server, at_once):
    engine = at_once["summary"]["engine"]
    assert engine["kind"] == "endpoint"
    assert engine["base_url"] == vllm_server.base_url.replace("http://", "http://***@")
    assert engine["server"]["id"] == vllm_server.model_id
    assert engine["server"]["max_model_len"] == 256
    assert engine["server"]["version"]  # vLLM's /version
    assert engine["requests_retried"] == 0
    # the server runs on this node: watched on its GPUs (none here: nothing sampled), said so
    pid = vllm_server.pgid  # the server leads its process group
    watched = f"per phase on this node: every GPU of it (the server: pid {pid})"
    assert engine["telemetry"] == watched == at_once["summary"]["telemetry"]["endpoint"]
    assert engine["tokenizer_check"] == "equal (/tokenize)"
    assert at_once["summary"]["plan"]["memory"]["needed"] == 0
    for text in [at_once["out"], *(p.read_text(errors="replace") for p in files(at_once))]:
        assert "pw-s3cret-77" not in text
        assert KEY not in text


def files(result: dict[str, Any]) -> list[Path]:
    """Every file the run wrote: its run directory, the result store, Hydra's own folder."""
    root = result["run_dir"].parent
    return [
        p for p in root.rglob("*") if p.is_file() and p.suffix != ".gz" and "hf_home" not in p.parts
    ]


@pytest.fixture(scope="module")
def throttled(vllm_server: VLLMServer, tmp_path_factory) -> dict[str, Any]:
    """Three datasets at once through a proxy that answers 429 to every fifth request, and has
    no /tokenize (the tokenizers are compared through an echoed completion)."""
    proxy = Proxy(
        vllm_server.root, throttle_every=5, delay_every=7, delay_s=0.3, no_tokenize=True
    ).start()
    try:
        args = endpoint(proxy.url, "strategy.retry_wait_s=0.05", "strategy.num_concurrent=4")
        root = tmp_path_factory.mktemp("throttled")
        result = ok(run(root, *args, datasets("arith_mc", "reverse_gen", "story_ppl")))
    finally:
        proxy.stop()
    return result | {"proxy": proxy}


def test_429s_are_retried_and_counted_and_never_scored(in_process, throttled):
    proxy = throttled["proxy"]
    assert proxy.throttled > 0 and proxy.delayed > 0
    reference = metrics(in_process)
    assert metrics(throttled) == {k: reference[k] for k in ("arith_mc", "reverse_gen", "story_ppl")}
    outcomes = throttled["summary"]["datasets"]
    # each dataset its own retries (three request types: no HTTP request carries two datasets)
    assert outcomes["reverse_gen"]["requests_retried"] == proxy.throttled_kinds["generate"]
    scored = outcomes["arith_mc"]["requests_retried"] + outcomes["story_ppl"]["requests_retried"]
    assert scored == proxy.throttled_kinds["scored"]
    assert throttled["summary"]["engine"]["requests_retried"] == proxy.throttled
    assert throttled["summary"]["engine"]["concurrency_lowest"] < 4  # halved on a 429
    assert "requests retried (transport errors, not scored)" in throttled["out"]
    assert throttled["summary"]["engine"]["tokenizer_check"] == "equal (echoed prompt tokens)"


def test_a_dataset_that_fails_on_429s_counts_the_retries_it_spent(vllm_server, tmp_path):
    """Every generation request is answered 429: reverse_gen fails after its tries (nothing of
    it scored), its outcome and error record count every retry the run made (all were its
    own); arith_mc, at once beside it, finishes with none."""
    proxy = Proxy(vllm_server.root, throttle_kind="generate").start()
    try:
        args = endpoint(proxy.url, "strategy.max_retries=3", "strategy.retry_wait_s=0.01")
        result = run(tmp_path, *args, datasets("arith_mc", "reverse_gen"))
    finally:
        proxy.stop()
    assert result["code"] == 1 and result["summary"], result["out"][-3000:]
    summary = result["summary"]
    failed = summary["datasets"]["reverse_gen"]
    assert failed["status"] == "failed" and "429" in failed["error_message"]
    assert failed["requests_retried"] == summary["engine"]["requests_retried"] > 0
    assert proxy.throttled_kinds["generate"] > failed["requests_retried"]  # and the last tries
    from harness.record.rundir import RunDirectory

    error = json.loads(RunDirectory(result["run_dir"]).dataset_error("reverse_gen").read_text())
    assert error["requests_retried"] == failed["requests_retried"]
    assert summary["datasets"]["arith_mc"]["status"] == "ok"
    assert summary["datasets"]["arith_mc"]["requests_retried"] == 0


def refused(result: dict[str, Any], proxy: Proxy, *needles: str) -> None:
    assert result["code"] == 2, result["out"][-3000:]
    assert "Traceback" not in result["out"]
    for needle in needles:
        assert needle in result["out"], result["out"][-3000:]
    assert proxy.posts == 0  # no dataset request reached the server
    assert result["summary"] is None


def test_bad_servers_are_refused_before_any_request(vllm_server, tmp_path):
    proxy = Proxy(vllm_server.root).start()
    try:
        args = endpoint(proxy.url, "strategy.model_id=tiny")
        wrong_id = run(tmp_path / "id", *args, datasets("arith_mc"))
        refused(wrong_id, proxy, "strategy.model_id='tiny'", "does not serve it", "Fix:")
        chat = run(
            tmp_path / "chat",
            *endpoint(proxy.url, "strategy.api=chat", "strategy.batch_size=1"),
            "model=tiny_char_chat",  # tiny_char's weights and tokenizer, with a chat template
            datasets("arith_mc", "reverse_gen"),
            "apply_chat_template=true",
        )
        refused(chat, proxy, "dataset 'arith_mc'", "chat API", "strategy.api=completions")
        assert "dataset 'reverse_gen'" not in chat["out"]
        other = tmp_path / "other_tokenizer"
        shutil.copytree(MODEL, other)
        swap_two_tokens(other / "tokenizer.json")
        tokenizer = run(
            tmp_path / "tok",
            *endpoint(proxy.url),
            f"model.pretrained={other}",
            datasets("reverse_gen"),
        )
        refused(tokenizer, proxy, "tokenizer differs", "/tokenize: first difference", "Fix: model=")
        assert proxy.paths["POST /tokenize"] >= 1
        proxy.no_tokenize = True  # a server without /tokenize: its echoed prompt tokens differ
        swapped = [*endpoint(proxy.url), f"model.pretrained={other}", datasets("reverse_gen")]
        echoed = run(tmp_path / "echo", *swapped)
        refused(echoed, proxy, "tokenizer differs", "(echoed prompt tokens: first difference")
        proxy.no_tokenize = False
        proxy.max_model_len = 128  # as if started with --max-model-len 128
        short = run(tmp_path / "short", *endpoint(proxy.url), datasets("reverse_gen"))
        refused(short, proxy, "context of 128 tokens", "strategy.max_model_len=128")
    finally:
        proxy.stop()


def swap_two_tokens(path: Path) -> None:
    """A tokenizer whose ids for 'a' and 'b' are swapped: the server's no longer agrees."""
    tokenizer = json.loads(path.read_text())
    vocab = tokenizer["model"]["vocab"]
    vocab["a"], vocab["b"] = vocab["b"], vocab["a"]
    path.write_text(json.dumps(tokenizer))


def test_a_foreign_endpoint_that_goes_away_fails_its_dataset_and_keeps_its_journal(
    vllm_server, in_process, tmp_path
):
    """The proxy stops listening during the first dataset and comes back once it has failed:
    that dataset fails with the reason, the others finish (exit 1); the rerun resumes it from
    its journal, and its metrics are the in-process engine's."""
    proxy = Proxy(vllm_server.root).start()
    names = ("arith_mc", "reverse_gen")
    args = [
        *endpoint(proxy.url, "strategy.max_retries=2", "strategy.retry_wait_s=0.1"),
        datasets(*names),
        "max_concurrent_datasets=1",
        "strategy.journal_slice_s=0.01",
    ]
    root = tmp_path / "dies"
    events = root / "run" / "events.jsonl"

    def go_away_then_return() -> None:
        wait(lambda: proxy.posts >= 20)
        proxy.down()
        wait(lambda: events.is_file() and "dataset_failed" in events.read_text())
        proxy.up()

    helper = threading.Thread(target=go_away_then_return, daemon=True)
    try:
        helper.start()
        first = run(root, *args)
        helper.join(5)
        second = run(root, *args, name="rerun")
    finally:
        proxy.stop()
    assert first["code"] == 1, first["out"][-3000:]
    failed = first["summary"]["datasets"]["arith_mc"]
    assert failed["status"] == "failed"
    assert "did not answer" in failed["error_message"] or "reached" in failed["error_message"]
    assert first["summary"]["datasets"]["reverse_gen"]["status"] == "ok"
    ok(second)
    resumed = second["summary"]["datasets"]["arith_mc"]
    assert resumed["requests_journaled"] > 0
    assert resumed["metrics"] == metrics(in_process)["arith_mc"]


def wait(condition: Any, timeout: float = RUN_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the condition never held")
        time.sleep(0.05)


def test_a_server_that_stops_answering_trips_the_watchdog_within_its_limit(vllm_server, tmp_path):
    """The proxy takes requests and answers none during the dataset: the stall watchdog gives
    up on it after strategy.stall_timeout_s, the health check as soon, and the dataset fails
    with the reason (a foreign server is never restarted)."""
    proxy = Proxy(vllm_server.root).start()
    args = [*endpoint(proxy.url, "strategy.stall_timeout_s=3"), datasets("arith_mc")]
    started: list[float] = []

    def stop_answering() -> None:
        wait(lambda: proxy.posts >= 10)
        proxy.hang()
        started.append(time.monotonic())

    helper = threading.Thread(target=stop_answering, daemon=True)
    try:
        helper.start()
        result = run(tmp_path / "hangs", *args)
        ended = time.monotonic()
    finally:
        proxy.up()
        proxy.stop()
    assert result["code"] == 1, result["out"][-3000:]
    assert "answered nothing for 3s" in result["out"]
    failed = result["summary"]["datasets"]["arith_mc"]
    assert failed["status"] == "failed" and "no answer within 3s" in failed["error_message"]
    assert ended - started[0] < 30  # two limits of 3 s, and the run's own end


def test_a_chat_api_answers_generation_tasks(vllm_server, tmp_path):
    args = endpoint(vllm_server.base_url, "strategy.api=chat", "strategy.batch_size=1")
    chat = ok(
        run(
            tmp_path,
            *args,
            "model=tiny_char_chat",
            "apply_chat_template=true",
            datasets("reverse_gen"),
        )
    )
    outcome = chat["summary"]["datasets"]["reverse_gen"]
    assert outcome["requests"] == 200 and "exact_match" in outcome["metrics"]
    assert chat["summary"]["engine"]["api"] == "chat"
