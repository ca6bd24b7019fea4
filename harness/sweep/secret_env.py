"""Secrets go to a submitted sweep's jobs through the environment, never through submitit's pickles.

submitit pickles what each job runs (``.submitit/<job>/<job>_submitted.pkl``: the launcher with the
sweep's master config, and the job's overrides) and what it returns (``<job>_<task>_result.pkl``),
in the sweep directory. So, before anything is submitted:

- a secret in an override's value (``tracking.uri=http://user:pass@host:5000``: whatever
  :func:`harness.secrets.mask` would hide) is replaced there by an interpolation,
  ``tracking.uri=http://${oc.env:HARNESS_SECRET_0}@host:5000``, and its value put in the
  environment of the jobs (``HARNESS_SECRET_<n>``): the local executor starts each job with this
  process's environment, and sbatch passes it to a SLURM job (``--export=ALL``, its default).
  The job composes its config from the same overrides, so the interpolation resolves to the
  secret where it is used, and everything the run writes is masked as for a single run (its
  ``.hydra/*.yaml`` hold the interpolation itself);
- every other string of the master config (``hydra.overrides.task``, the values a non-swept
  override set) is masked: the job reads only its Hydra overrides (sealed likewise) and its
  config name from it;
- what would be pickled is pickled once here and searched for every secret (:func:`leaks`): a
  sweep that would still write one is refused, nothing submitted.

A secret inside a list or dict value cannot be sealed this way: such a job is refused, saying so.
In the job, what it returns is masked before submitit pickles it (``harness.sweep.job``).
"""

from __future__ import annotations

import contextlib
import copy
import os
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from harness.secrets import MASK, env_secrets, mask, secret_parts

if TYPE_CHECKING:
    from omegaconf import DictConfig, ListConfig

ENV_PREFIX = "HARNESS_SECRET_"
"""The jobs' environment variables that hold the sweep's secrets (secret-named: masked by value)."""


def _env_ref(secret: str, names: dict[str, str]) -> str:
    """The interpolation that reads ``secret`` from the jobs' environment (a name per secret)."""
    name = names.setdefault(secret, f"{ENV_PREFIX}{len(names)}")
    return "${oc.env:" + name + "}"


def _quoted(piece: str) -> str:
    """``piece`` as it reads inside a single-quoted Hydra value."""
    return piece.replace("\\", "\\\\").replace("'", "\\'")


def seal_override(line: str, names: dict[str, str]) -> str | None:
    """``line`` (one override) with every secret of its value read from the environment instead,
    ``names`` (secret -> variable) extended with the secrets it holds. ``line`` itself when it holds
    none; None when its secret cannot be moved (in a list or dict value, or in the key).

    The secret pieces alone are replaced (unquoted, else single-quoted) where Hydra parses the
    result back to the value with them in place, so that the rest of the value stays readable in
    the job's records; else the whole value comes from the environment.
    """
    if mask(line) == line:
        return line
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    try:
        value = parser.parse_override(line).value()
    except Exception:  # Hydra's parser raises its own errors; the job would refuse it anyway
        return None
    key = line.split("=", 1)[0]
    if not isinstance(value, str) or mask(key) != key:
        return None
    from hydra._internal.grammar.utils import escape_special_characters as escape

    candidates = []
    parts = secret_parts(value)
    if parts:
        trial = dict(names)
        kept = mask(value).split(MASK)
        refs = [_env_ref(p, trial) for p in parts]
        want = kept[0] + "".join(r + k for r, k in zip(refs, kept[1:], strict=True))
        for quote in (escape, _quoted):
            text = quote(kept[0]) + "".join(
                r + quote(k) for r, k in zip(refs, kept[1:], strict=True)
            )
            candidates.append((f"'{text}'" if quote is _quoted else text, want, trial))
    trial = dict(names)
    whole = _env_ref(value, trial)
    candidates.append((whole, whole, trial))
    secrets = [*(parts or []), value]
    for text, want, trial in candidates:
        sealed = f"{key}={text}"
        if any(s in sealed for s in secrets):
            continue
        try:
            if parser.parse_override(sealed).value() != want:
                continue
        except Exception:  # this form does not parse: the next one
            continue
        names.update(trial)
        return sealed
    return None


def sealed_overrides(
    overrides: Sequence[str], names: dict[str, str]
) -> tuple[list[str], list[str]]:
    """Each override sealed (:func:`seal_override`), and a problem for each that cannot be."""
    out, problems = [], []
    for line in overrides:
        sealed = seal_override(line, names)
        if sealed is None:
            problems.append(
                f"{mask(line)}: a secret in this override would be written into submitit's "
                "pickles in the sweep directory; a submitted sweep passes secrets to its jobs "
                "through the environment, which works for a plain string value only. Fix: put "
                "the secret in an environment variable of the shell that submits the sweep and "
                "write ${oc.env:THAT_VARIABLE} in its place."
            )
            sealed = line
        out.append(sealed)
    return out, problems


def mask_config(cfg: DictConfig | ListConfig, keep: Sequence[str] = ()) -> None:
    """Mask every string value of ``cfg`` in place, but those under the dotted keys ``keep``."""
    from omegaconf import DictConfig, ListConfig, read_write

    def walk(node: Any, path: str) -> None:
        keys: list[Any] = list(node.keys()) if isinstance(node, DictConfig) else [*range(len(node))]
        for key in keys:
            where = f"{path}.{key!s}" if path else str(key)
            if where in keep:
                continue
            child = node._get_node(key)
            if isinstance(child, DictConfig | ListConfig):
                if not child._is_none() and not child._is_missing():
                    walk(child, where)
                continue
            value = child._value() if child is not None else None
            if isinstance(value, str) and mask(value) != value:
                node[key] = mask(value)

    with read_write(cfg):
        walk(cfg, "")


def sealed_master(config: DictConfig, names: dict[str, str]) -> tuple[DictConfig, list[str]]:
    """A copy of the sweep's master config fit to pickle: its Hydra overrides sealed, every other
    string masked, its resolver cache (``${now:...}`` of the sweep directory) kept."""
    from omegaconf import OmegaConf, open_dict, read_write

    out = copy.deepcopy(config)
    OmegaConf.copy_cache(from_config=config, to_config=out)
    given = OmegaConf.to_container(config.hydra.overrides.hydra)
    assert isinstance(given, list)
    sealed, problems = sealed_overrides([str(o) for o in given], names)
    with read_write(out), open_dict(out):
        out.hydra.overrides.hydra = sealed
    mask_config(out, keep=("hydra.overrides.hydra",))
    return out, problems


def job_secrets(names: dict[str, str] | None = None) -> list[str]:
    """The secrets nothing pickled may hold: the sweep's (``names``, else those its jobs were
    given in their environment) and every secret-named environment variable's value."""
    given = list(names) if names is not None else []
    given += [v for k, v in os.environ.items() if k.startswith(ENV_PREFIX) and v]
    return sorted({*given, *env_secrets()}, key=len, reverse=True)


def leaks(obj: Any, secrets: Sequence[str]) -> list[str]:
    """The ``secrets`` that pickling ``obj`` (as submitit does, with cloudpickle) would write."""
    if not secrets:
        return []
    import cloudpickle

    data = cloudpickle.dumps(obj)
    return [s for s in secrets if s.encode() in data]


@contextlib.contextmanager
def secret_environment(names: dict[str, str]) -> Iterator[None]:
    """This process's environment (which the jobs get) with ``HARNESS_SECRET_<n>`` set, while the
    sweep runs; as it was afterwards."""
    before = {name: os.environ.get(name) for name in names.values()}
    os.environ.update({name: secret for secret, name in names.items()})
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
