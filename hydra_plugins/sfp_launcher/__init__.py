"""The sweep launcher that groups jobs into shared passes (implemented in sfp.launcher; its config schema is
registered by sfp.config.store). Hydra accepts a launcher only when its class is defined inside the
`hydra_plugins` package, hence this subclass."""
try:
    from sfp.launcher import GroupingLauncher
except ImportError:  # sfp not importable in this interpreter: leave other Hydra applications alone
    pass
else:
    class SFPLauncher(GroupingLauncher):
        """`hydra/launcher=grouped` (the default), `local_parallel`, `slurm`: see sfp.launcher."""
