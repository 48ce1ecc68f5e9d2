"""Hydra discovers search-path plugins in the `hydra_plugins` namespace; the plugin lives in sfp.config.searchpath."""
try:
    from sfp.config.searchpath import SFPExperimentsSearchPathPlugin  # noqa: F401
except ImportError:  # sfp not importable in this interpreter: leave other Hydra applications alone
    pass
