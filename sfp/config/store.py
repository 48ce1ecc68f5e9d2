"""Registers the run schema with Hydra's ConfigStore, so composition validates every key and type."""
from __future__ import annotations

from hydra.core.config_store import ConfigStore

from .schema import RunConfig

SCHEMA_NAME = "run_schema"


def register_schema() -> None:
    ConfigStore.instance().store(name=SCHEMA_NAME, node=RunConfig)
