"""Masking of tokens, keys and credentials (harness/secrets.py), piece by piece."""

from __future__ import annotations

import json
import logging

import pytest

from harness.record.files import write_json_atomic
from harness.record.store import ResultStore
from harness.secrets import MaskFilter, env_secrets, mask, mask_tree


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("https://user:pa55@host:5000/x", "https://***@host:5000/x"),
        ("git+https://ghp_tokenonly@github.com/o/r", "git+https://***@github.com/o/r"),
        (r"- tracking.uri=http\://u\:pw@h:5000", r"- tracking.uri=http\://***@h:5000"),  # Hydra
        ("http://h/api?token=abc123&run=7", "http://h/api?token=***&run=7"),
        (r"x=http\://h/api?token\=abc123", r"x=http\://h/api?token\=***"),  # escaped by Hydra
        ("s3://b/k?X-Amz-Signature=f00&X-Amz-Date=1", "s3://b/k?X-Amz-Signature=***&X-Amz-Date=1"),
        ("u?api_key=k1;access_token=t2", "u?api_key=***;access_token=***"),
        ("hf_" + "a" * 34 + " was used", "*** was used"),
        ("key AKIAABCDEFGHIJKLMNOP here", "key *** here"),
        ("sk-" + "x" * 40, "***"),
        # left alone: no credentials in them
        ("sqlite:////tmp/a@b/mlflow.db", "sqlite:////tmp/a@b/mlflow.db"),
        ("user@example.com wrote http://host/path?task=arith", None),
        ("acc=0.5, limit=10, tokens_per_s=300", None),
    ],
)
def test_mask_finds_credentials_in_text(text, masked):
    assert mask(text) == (text if masked is None else masked)


def test_secret_env_values_are_masked_wherever_they_appear(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "not-shaped-like-a-token-42")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "hunter2hunter2")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")  # a name with TOKEN, not a secret
    monkeypatch.setenv("SSH_AUTH_SOCK", "/tmp/ssh-agent.sock")  # a path, not a secret
    monkeypatch.setenv("GITHUB_TOKEN", "1")  # too short to mask without wrecking text
    secrets = env_secrets()
    assert "not-shaped-like-a-token-42" in secrets and "hunter2hunter2" in secrets
    assert "false" not in secrets and "/tmp/ssh-agent.sock" not in secrets and "1" not in secrets
    tree = {"roots": ["/opt/not-shaped-like-a-token-42"], "n": 1, "pw": "hunter2hunter2"}
    assert mask_tree(tree) == {"roots": ["/opt/***"], "n": 1, "pw": "***"}


def test_files_written_are_masked_and_stored_results_stay_intact(monkeypatch, tmp_path):
    monkeypatch.setenv("MY_API_KEY", "zzz-secret-zzz")
    write_json_atomic(tmp_path / "a.json", {"uri": "http://u:p@h", "k": "zzz-secret-zzz"})
    assert json.loads((tmp_path / "a.json").read_text()) == {"uri": "http://***@h", "k": "***"}
    store = ResultStore(tmp_path / "store")
    store.save("d", "fp", {"model": "m"}, {"status": "ok"}, {"config": "key zzz-secret-zzz"})
    assert "zzz-secret-zzz" not in store.path("d", "fp").read_text()
    loaded = store.load("d", "fp")  # the checksum is over what was written: still intact
    assert loaded is not None and loaded["result"] == {"config": "key ***"}


def test_log_records_are_masked_before_any_handler_writes_them(caplog):
    record = logging.LogRecord("x", logging.WARNING, __file__, 1, "at %s", ("http://u:p@h",), None)
    assert MaskFilter().filter(record) and record.getMessage() == "at http://***@h"
