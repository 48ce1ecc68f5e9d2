"""The sweep launcher that groups jobs into shared passes (implemented in sfp.launcher). Hydra accepts a
launcher only when its class is defined inside the `hydra_plugins` package, hence this subclass."""
try:
    from sfp.launcher import BASE_CONFIG, GroupingLauncher, GroupingLauncherConf
except ImportError:  # sfp not importable in this interpreter: leave other Hydra applications alone
    pass
else:
    from hydra.core.config_store import ConfigStore

    class SFPLauncher(GroupingLauncher):
        """`hydra/launcher=grouped` (the default), `local_parallel`, `slurm`: see sfp.launcher."""

    ConfigStore.instance().store(group="hydra/launcher", name=BASE_CONFIG, node=GroupingLauncherConf,
                                 provider="sfp")
