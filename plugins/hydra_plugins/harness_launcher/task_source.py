"""``dataset=[arc_challenge,mmlu_pro]`` without an option file: any lm-eval task or group by its
own name. Hydra asks its search path for ``dataset/<name>``; harness's ``conf/`` (and the user's
``hydra.searchpath`` folders) answer the names they have files for. This source, put last on the
path by ``harness.config.argv.with_task_source`` when a name has no file, answers it with
``{task: <name>}`` under ``dataset.<name>``, lm-eval's defaults otherwise (still overridable:
``dataset.arc_challenge.num_fewshot=25``). Whether lm-eval has such a task is decided when the
run prepares its datasets, before loading (lm-eval's own task index, built only then, with its
"Did you mean"), so composing stays fast.
"""

from __future__ import annotations

import re

from hydra.core.object_type import ObjectType
from hydra.plugins.config_source import ConfigResult, ConfigSource
from omegaconf import OmegaConf

SCHEME = "lmeval"
TASK_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_\-]*$")
"""A task name that can be a config key (no dot: it would split the package path)."""


def _name(config_path: str) -> str | None:
    group, _, name = config_path.rstrip("/").removesuffix(".yaml").partition("/")
    return name if group == "dataset" and TASK_NAME.match(name) else None


class LmEvalTaskSource(ConfigSource):
    """``dataset/<name>`` for any lm-eval task name: ``{task: <name>}``."""

    @staticmethod
    def scheme() -> str:
        return SCHEME

    def load_config(self, config_path: str) -> ConfigResult:
        name = _name(config_path)
        assert name is not None, config_path
        return ConfigResult(
            config=OmegaConf.create({"task": name}),
            path=f"{SCHEME}://{self.path}",
            provider=self.provider,
            header={"package": f"dataset.{name}"},
        )

    def available(self) -> bool:
        return True

    def is_group(self, config_path: str) -> bool:
        return config_path.rstrip("/") == "dataset"

    def is_config(self, config_path: str) -> bool:
        return _name(config_path) is not None

    def list(self, config_path: str, results_filter: ObjectType | None) -> list[str]:
        return []  # lm-eval's thousands of tasks are not listed (--help lists the option files)
