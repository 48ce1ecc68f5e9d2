"""Registers the run schema with Hydra's ConfigStore, so composition validates every key and type, and the
base of the sweep launcher's configs (conf/hydra/launcher/*.yaml add the launcher that runs the groups)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from hydra.core.config_store import ConfigStore

from .schema import RunConfig

SCHEMA_NAME = "run_schema"
LAUNCHER_BASE = "sfp_grouping_base"  # hydra/launcher/<this>


@dataclass
class GroupingLauncherConf:
    """hydra.launcher of the grouping launcher (sfp.launcher)."""

    _target_: str = "hydra_plugins.sfp_launcher.SFPLauncher"
    _recursive_: bool = False  # `inner` reaches the launcher as a config, not as an instantiated launcher
    group: bool = True  # false: the inner launcher runs each job by itself
    max_variants: Optional[int] = None  # at most this many jobs per pass; None: no limit
    inner: Any = None  # the launcher that runs the groups (basic, joblib or a submitit launcher)


def register_schema() -> None:
    store = ConfigStore.instance()
    store.store(name=SCHEMA_NAME, node=RunConfig)
    store.store(group="hydra/launcher", name=LAUNCHER_BASE, node=GroupingLauncherConf, provider="sfp")
