"""Make ``hydra/launcher=submitit_local`` mean conf/hydra/launcher/submitit_local.yaml alone
(``harness.sweep.job.drop_stock_local_config`` says why). Hydra calls search path plugins once
all plugins are loaded and before it composes anything: the moment to drop hydra-submitit's own
registration of that name. (Inside a job it is dropped again: ``harness.sweep.job.run_task``.)
"""

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin


class HarnessLauncherConfigs(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        from harness.sweep.job import drop_stock_local_config

        drop_stock_local_config()
