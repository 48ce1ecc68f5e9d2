"""Where the project's folders are, in a source checkout and in an installed wheel alike.

In a checkout, conf/ and experiments/ lie beside the sfp package; a wheel installs them inside it, as
`sfp/conf` and `sfp/experiments` (see pyproject.toml). `root()` is the documented base of the relative
default paths (data, cache, outputs): $SFP_ROOT, else the checkout, else ~/sfp.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

PACKAGE_DIR = Path(__file__).resolve().parent.parent
ASSET_DIR = PACKAGE_DIR / "assets"


def checkout_root() -> Optional[Path]:
    """The source checkout that holds the imported sfp package, or None for an installed package."""
    parent = PACKAGE_DIR.parent
    return parent if (parent / "pyproject.toml").is_file() and (parent / "conf" / "config.yaml").is_file() else None


def _project_dir(name: str) -> Path:
    checkout = checkout_root()
    return checkout / name if checkout is not None else PACKAGE_DIR / name


def conf_dir() -> Path:
    """The primary config folder: $SFP_CONF_DIR, else the checkout's conf/, else the packaged copy."""
    return Path(os.environ["SFP_CONF_DIR"]) if os.environ.get("SFP_CONF_DIR") else _project_dir("conf")


def experiments_dir() -> Path:
    return _project_dir("experiments")


def root() -> Path:
    """Base of the default data, cache and output paths: $SFP_ROOT, the checkout, or ~/sfp."""
    if os.environ.get("SFP_ROOT"):
        return Path(os.environ["SFP_ROOT"]).expanduser().resolve()
    return checkout_root() or Path.home() / "sfp"


def asset_path(relative: str) -> str:
    return str(ASSET_DIR / relative)
