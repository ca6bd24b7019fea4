"""How a submitted sweep's secrets are kept out of what submitit pickles (harness/sweep/secret_env):
each sealed override, parsed back by Hydra's own parser and resolved by OmegaConf with the jobs'
environment, gives the value as typed, and holds none of the secret."""

from __future__ import annotations

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from harness.secrets import secret_parts
from harness.sweep.secret_env import (
    leaks,
    mask_config,
    seal_override,
    sealed_overrides,
    secret_environment,
)

PARSER = OverridesParser.create()


def test_secret_parts_are_what_mask_hides():
    assert secret_parts("http://u:s3cret@h:5000/x") == ["u:s3cret"]
    assert secret_parts("https://h/p?token=abc123&q=1 http://a:bcd@h") == ["abc123", "a:bcd"]
    assert secret_parts("nothing to hide") == []
    assert secret_parts("*** http://a:b@h") is None  # a *** already there: cannot tell


@pytest.mark.parametrize(
    ("line", "readable"),
    [
        # as Hydra's sweeper hands each job its value (escaped), and as typed
        (r"tracking.uri=http\://u\:s3cretPW@127.0.0.1\:5077", "@127.0.0.1:5077"),
        ("tracking.uri=http://u:s3cretPW@h2:5000", "@h2:5000"),
        # characters only a quoted value may hold
        ("+x='https://h/p?token=abc123&q=1'", "&q=1"),
        ('+x="it\'s http://a:bcdefg@h"', "it's http://"),
        # a token of a known shape: the whole value
        ("+x=ghp_" + "a" * 36, ""),
    ],
)
def test_a_sealed_override_resolves_to_the_value_and_holds_no_secret(line, readable):
    names: dict[str, str] = {}
    sealed = seal_override(line, names)
    assert sealed is not None and names
    value = PARSER.parse_override(line).value()
    for secret in names:
        assert secret not in sealed
    with secret_environment(names):
        cfg = OmegaConf.create({"v": PARSER.parse_override(sealed).value()})
        assert cfg.v == value
    assert readable in PARSER.parse_override(sealed).value()
    with pytest.raises(Exception, match="HARNESS_SECRET_0"):  # gone with the sweep
        _ = cfg.v


def test_overrides_without_secrets_are_kept_and_a_secret_in_a_list_is_refused():
    names: dict[str, str] = {}
    kept = ["dataset=[arith_mc]", "tracking.uri=${oc.env:MY_URI}", "tier.host_memory_gib=2"]
    assert sealed_overrides(kept, names) == (kept, [])
    _, problems = sealed_overrides(["allowed_roots=[http://u:pw1234@h/x]"], names)
    assert len(problems) == 1 and "pw1234" not in problems[0]
    assert "${oc.env:THAT_VARIABLE}" in problems[0] and "plain string value" in problems[0]
    assert names == {}


def test_one_variable_per_secret_and_a_config_masked_but_what_is_kept():
    names: dict[str, str] = {}
    a = seal_override("a=http://u:pw1234@h1", names)
    b = seal_override("b=http://u:pw1234@h2", names)
    assert names == {"u:pw1234": "HARNESS_SECRET_0"} and a and b and a.count("SECRET_0") == 1
    cfg = OmegaConf.create({"x": "http://u:pw1234@h", "keep": ["http://u:pw1234@h"], "n": 3})
    mask_config(cfg, keep=("keep",))
    assert cfg.x == "http://***@h" and cfg.keep == ["http://u:pw1234@h"] and cfg.n == 3
    assert leaks(cfg, ["pw1234"]) == ["pw1234"] and leaks(cfg, ["other"]) == []


def test_the_master_config_is_pickled_sealed_and_masked_and_left_as_it_was():
    from harness.sweep.secret_env import sealed_master

    uri = "http://u:pw1234@h:5000"
    cfg = OmegaConf.create(
        {
            "hydra": {
                "overrides": {"hydra": [f"hydra.job.name={uri}"], "task": [f"tracking.uri={uri}"]},
                "job": {"config_name": "config"},
            },
            "tracking": {"uri": uri},  # what a non-swept override set
        }
    )
    names: dict[str, str] = {}
    sealed, problems = sealed_master(cfg, names)
    assert problems == [] and names == {"u:pw1234": "HARNESS_SECRET_0"}
    assert leaks(sealed, ["pw1234"]) == []
    assert sealed.hydra.overrides.hydra == [
        r"hydra.job.name=http\://${oc.env:HARNESS_SECRET_0}@h\:5000"
    ]
    assert sealed.hydra.overrides.task == ["tracking.uri=http://***@h:5000"]
    assert sealed.tracking.uri == "http://***@h:5000"
    assert cfg.tracking.uri == uri and cfg.hydra.overrides.task == [f"tracking.uri={uri}"]


def test_what_a_job_returns_or_raises_is_masked_before_it_is_pickled(monkeypatch):
    from hydra.core.utils import JobReturn, JobStatus

    from harness.sweep.job import masked_failure, masked_return

    monkeypatch.setenv("HARNESS_SECRET_0", "u:pw-981x")  # as the sweep gives it to the job
    uri = "http://u:pw-981x@h:5000"
    ret = JobReturn(overrides=[r"tracking.uri=http\://${oc.env:HARNESS_SECRET_0}@h\:5000"])
    ret.cfg = OmegaConf.create({"tracking": {"uri": uri}})
    ret.status = JobStatus.FAILED
    ret.return_value = ConnectionError(f"cannot reach {uri}")
    out = masked_return(ret)
    assert leaks(out, ["pw-981x"]) == []
    assert out.cfg.tracking.uri == "http://***@h:5000"
    assert str(out._return_value) == "ConnectionError: cannot reach http://***@h:5000"

    plain = ValueError("nothing secret")
    assert masked_failure(plain) is plain
    hidden = masked_failure(ValueError(f"bad {uri}"))
    assert isinstance(hidden, RuntimeError) and "pw-981x" not in str(hidden)
    assert "ValueError: bad http://***@h:5000" in str(hidden)
