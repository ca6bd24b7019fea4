"""The fetch command: compose each run as ``python -m harness`` would (a sweep's every
combination with ``-m``), gather what they need from the hub, then print, check or fetch it."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from harness.console import say
from harness.errors import ConfigError, HarnessError
from harness.fetch.needs import LocalModel, Need, dataset_needs, is_here, model_need

HELP = """\
harness.fetch: what a run (or a whole sweep) needs from the Hugging Face hub, fetched on a node
that reaches the hub so that a node without it (offline=true) can run.

  python -m harness.fetch [-m] OVERRIDES...
      compose the run as `python -m harness OVERRIDES...` does (with -m: every combination of
      the sweep's comma lists, the config's hydra.sweeper.params too), list what it needs (the
      model's files, each dataset repo its lm-eval tasks load) and whether this machine's
      Hugging Face cache (HF_HOME) holds each; where the hub is reachable, download what is
      missing (huggingface_hub's snapshot_download, as `hf download` does); where it is not
      (HF_HUB_OFFLINE=1, no network), say what is missing.
  python -m harness.fetch --print [-m] OVERRIDES...
      print only the `hf download` lines, one per repo (run them on a login node that shares
      HF_HOME with the compute nodes); nothing is checked or downloaded
  python -m harness.fetch --check [-m] OVERRIDES...
      say what is here and what is missing; never download
  --config-dir DIR --config-name NAME (-cd, -cn)
      start from the config NAME.yaml in DIR, as `python -m harness` does with Hydra's flags
      (a sweep written in it, hydra.sweeper.params, is swept with -m)

The model: a hub id's whole snapshot (config, tokenizer and every weight shard; config and
tokenizer alone with strategy=endpoint, whose weights are served elsewhere); a local folder needs
nothing (said when it does not exist). Datasets: the repo of each lm-eval task, group member or
tag member the run's datasets name (`hf download REPO --repo-type dataset`; an offline run reads
that snapshot).

Exit codes: 0 everything is here (or fetched; --print: printed), 1 a download failed, 2 bad
input, or something is missing and the hub cannot be reached (or --check).

Examples:
  python -m harness.fetch model=llama3_1_8b dataset=[mmlu]
  python -m harness.fetch --print -m model=llama3_1_8b,qwen3_8b dataset=[mmlu],[gsm8k]
  HF_HUB_OFFLINE=1 python -m harness.fetch model=llama3_1_8b dataset=[mmlu]   # on the compute node
"""

FLAGS = ("--print", "--check", "-m", "--multirun", "--help", "-h")
CONFIG_FLAGS = {"--config-dir": "dir", "-cd": "dir", "--config-name": "name", "-cn": "name"}
"""Hydra's own flags for the config a run starts from (``python -m harness`` takes them too)."""


def config_options(argv: Sequence[str]) -> tuple[list[str], StartConfig]:
    """``argv`` without Hydra's ``--config-dir``/``--config-name`` (``-cd``/``-cn``, a value
    after a space or ``=``), and the config they name."""
    rest: list[str] = []
    found: dict[str, str | None] = {"dir": None, "name": "config"}
    words = iter(argv)
    for word in words:
        flag, eq, value = word.partition("=")
        if flag in CONFIG_FLAGS:
            given = value if eq else next(words, "")
            if not given:
                raise ConfigError([f"{flag} takes a value. Fix: {flag}=<value>"])
            found[CONFIG_FLAGS[flag]] = given
        else:
            rest.append(word)
    folder = Path(found["dir"]).expanduser().resolve() if found["dir"] else None
    return rest, StartConfig(str(found["name"]), folder)


@dataclass(frozen=True)
class StartConfig:
    """The config the runs start from: ``name``.yaml in ``folder`` (``--config-dir``), with
    harness's ``conf/`` after it on the search path (as Hydra puts ``--config-dir`` first);
    harness's ``conf/config.yaml`` by default."""

    name: str = "config"
    folder: Path | None = None

    def words(self, words: Sequence[str]) -> list[str]:
        """``words`` with harness's ``conf/`` on ``hydra.searchpath`` where a folder is given."""
        if self.folder is None:
            return list(words)
        from harness.config.argv import with_search_path
        from harness.paths import CONF_DIR

        return with_search_path(words, f"file://{CONF_DIR}", first=True)


def job_overrides(
    words: Sequence[str], sweep: bool, start: StartConfig | None = None
) -> list[list[str]]:
    """The overrides of each run: one, or with ``sweep`` each combination of the comma lists (as
    Hydra's basic sweeper makes them: the config's ``hydra.sweeper.params`` first, a sweep
    written in YAML, then the command line's). The launcher's choice and keys are left out:
    where a job runs does not change what it needs."""
    from harness.config.argv import with_task_source

    start = start or StartConfig()
    words = start.words([w for w in words if not _launcher_word(w)])
    if not sweep:
        return [with_task_source(words)]
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser = OverridesParser.create()
    try:
        parsed = parser.parse_overrides(words)
        plain = [str(o.input_line) for o in parsed if not o.is_sweep_override()]
        params = sweeper_params(with_task_source(plain), start)
        params = [w for w in params if not _launcher_word(w)]
        parsed = parser.parse_overrides(with_task_source([*params, *words]))
        (batch,) = BasicSweeper.split_arguments(parsed, None)
    except HydraException as err:
        raise ConfigError(
            [f"the sweep does not parse ({err}). Fix: the override's syntax"]
        ) from None
    return [list(job) for job in batch]


def sweeper_params(words: Sequence[str], start: StartConfig) -> list[str]:
    """The sweep a config defines (``hydra.sweeper.params``: key -> comma list, e.g. in an
    experiment's YAML) as the overrides Hydra's basic sweeper puts before the command line's;
    none where the config does not compose (each job's own composition then says why)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from harness.config.store import libyaml_loading, register_configs
    from harness.paths import CONF_DIR

    register_configs()
    try:
        with (
            libyaml_loading(),
            initialize_config_dir(
                str(start.folder or CONF_DIR), version_base="1.3", job_name="harness"
            ),
        ):
            full = compose(start.name, overrides=list(words), return_hydra_config=True)
    except Exception:  # Hydra's and OmegaConf's errors, said again per job
        return []
    params = OmegaConf.select(full, "hydra.sweeper.params")
    return [f"{key}={value}" for key, value in (params or {}).items()]


def _launcher_word(word: str) -> bool:
    key = word.lstrip("+~").split("=", 1)[0]
    return key == "hydra/launcher" or key.startswith("hydra.launcher.")


def gather(
    jobs: list[list[str]], start: StartConfig | None = None
) -> tuple[list[Need], list[LocalModel]]:
    """What the runs need, each repo once in the order first needed; bad input of any run
    raises one ConfigError naming every job's problems."""
    from harness.service.start import composed

    needs: dict[Need, None] = {}
    local: dict[LocalModel, None] = {}
    problems: list[str] = []
    for number, words in enumerate(jobs):
        try:
            run = composed(words, start.name, start.folder) if start else composed(words)
        except ConfigError as err:
            where = f"job {number} ({' '.join(words)}): " if len(jobs) > 1 else ""
            problems += [where + p for p in err.problems]
            continue
        model = model_need(run)
        if isinstance(model, LocalModel):
            local[model] = None
        else:
            needs[model] = None
        needs.update(dict.fromkeys(dataset_needs(run)))
    if problems:
        raise ConfigError(problems)
    return list(needs), list(local)


def hub_reachable(timeout_s: float = 5.0) -> bool:
    """Whether the hub answers: not with ``HF_HUB_OFFLINE`` set, else any HTTP answer of its
    endpoint (``HF_ENDPOINT``) within ``timeout_s``."""
    import urllib.error
    import urllib.request

    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return False
    endpoint = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    try:
        urllib.request.urlopen(urllib.request.Request(endpoint, method="HEAD"), timeout=timeout_s)
    except urllib.error.HTTPError:
        return True  # it answered
    except (OSError, ValueError):
        return False
    return True


def download(need: Need) -> None:
    """``hf download``'s own call: the repo's snapshot into the hub cache (a dataset's
    configs alone where its README says which files they are)."""
    from huggingface_hub import snapshot_download

    snapshot_download(
        repo_id=need.repo,
        repo_type=need.repo_type,
        revision=need.revision,
        allow_patterns=allowed_files(need),
    )


def allowed_files(need: Need) -> list[str] | None:
    """The files to fetch: the need's own patterns; for a dataset, its README and the data
    files its README's ``configs`` block declares for the configs needed (the README fetched
    first); None, the whole repo, where the README does not declare every one."""
    if need.include:
        return list(need.include)
    if need.repo_type != "dataset" or not need.configs:
        return None
    from huggingface_hub import hf_hub_download

    from harness.evaluation.hub_data import snapshot_configs

    try:
        readme = hf_hub_download(
            repo_id=need.repo, filename="README.md", repo_type="dataset", revision=need.revision
        )
    except Exception:  # no README, or the hub's error: the whole repo, as `hf download`
        return None
    declared = snapshot_configs(Path(readme).parent) or {}
    if not all(declared.get(c) for c in need.configs):
        return None
    return ["README.md", *dict.fromkeys(p for c in need.configs for p in declared[c])]


def fetch(needs: list[Need], local: list[LocalModel], check_only: bool) -> int:
    """Say what is here; fetch what is missing where the hub is reachable; the exit code."""
    for model in local:
        state = "here" if model.exists else "MISSING (a local folder: nothing to fetch)"
        print(f"  {state:8} model folder {model.folder}")
    missing = [n for n in needs if not is_here(n)]
    for need in needs:
        print(f"  {'missing' if need in missing else 'here':8} {need.command()}")
    absent_folders = [m for m in local if not m.exists]
    if not missing:
        print(f"everything the run needs from the hub is here ({len(needs)} repo(s))")
        return 2 if absent_folders else 0
    if check_only or not hub_reachable():
        why = "--check" if check_only else "the hub is not reachable from here"
        say(
            f"error: {len(missing)} of {len(needs)} repo(s) missing from this machine's Hugging "
            f"Face cache ({why}):\n"
            + "\n".join(f"  {n.command()}   # {n.describe()}" for n in missing)
            + "\nFix: run those lines (or this command) where the hub is reachable, with the "
            "same HF_HOME, then run here again.",
            err=True,
            level=logging.ERROR,
        )
        return 2
    failed = 0
    for need in missing:
        print(f"fetching {need.describe()}: {need.command()}", flush=True)
        try:
            download(need)
        except Exception as err:  # the hub's or the network's: said per repo, the rest go on
            failed += 1
            say(f"error: {need.command()} failed: {err}", err=True, level=logging.ERROR)
            continue
        if not is_here(need):
            failed += 1
            say(f"error: {need.describe()} fetched but not found complete", err=True)
    if failed:
        return 1
    print(f"fetched {len(missing)} repo(s); everything the run needs from the hub is here")
    return 2 if absent_folders else 0


def dispatch(argv: Sequence[str]) -> int:
    argv, start = config_options(argv)
    flags = {w for w in argv if w.startswith("-")}
    unknown = sorted(flags - set(FLAGS))
    if unknown:
        raise ConfigError([f"unknown flag(s) {', '.join(unknown)}. Fix: one of {', '.join(FLAGS)}"])
    if flags & {"--help", "-h"}:
        print(HELP, end="")
        return 0
    words = [w for w in argv if not w.startswith("-")]
    jobs = job_overrides(words, bool(flags & {"-m", "--multirun"}), start)
    needs, local = gather(jobs, start)
    if "--print" in flags:
        for model in local:
            print(f"# model folder {model.folder}: nothing to fetch")
        for need in needs:
            print(need.command())
        return 0
    print(f"harness.fetch: {len(jobs)} run(s) need {len(needs)} repo(s) from the hub")
    return fetch(needs, local, check_only="--check" in flags)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m harness.fetch``: the exit code (``HELP`` lists them)."""
    import signal

    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    try:
        return dispatch(sys.argv[1:] if argv is None else argv)
    except HarnessError as err:
        say(f"error: {err}", err=True, level=logging.ERROR)
        return err.exit_code
    except KeyboardInterrupt:
        return 130
