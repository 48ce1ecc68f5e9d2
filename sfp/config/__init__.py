"""Run configuration: settings schemas, composition, locations. Imports nothing from models, methods or engine.

Importing this package registers two resolvers: ``${sfp.asset:demo/x.bin}`` is the absolute path of a
file shipped inside the package (``sfp/assets/...``) and ``${sfp.root:}`` the base folder of the default
paths (see `sfp.config.locations.root`), so no config holds a machine-specific path.
"""
from __future__ import annotations

from omegaconf import OmegaConf

from .locations import asset_path, root

if not OmegaConf.has_resolver("sfp.asset"):
    OmegaConf.register_new_resolver("sfp.asset", asset_path)
if not OmegaConf.has_resolver("sfp.root"):
    OmegaConf.register_new_resolver("sfp.root", lambda: str(root()))

__all__ = ["asset_path", "root"]
