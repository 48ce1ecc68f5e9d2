"""Run configuration: schemas, composition, validation.

Importing this package registers the ``sfp.asset`` resolver: ``${sfp.asset:demo/x.bin}`` is the
absolute path of a file shipped inside the package (``sfp/assets/...``), so configs can name
packaged files without any machine-specific path.
"""
from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

ASSET_DIR = Path(__file__).resolve().parent.parent / "assets"


def asset_path(relative: str) -> str:
    return str(ASSET_DIR / relative)


if not OmegaConf.has_resolver("sfp.asset"):
    OmegaConf.register_new_resolver("sfp.asset", asset_path)
