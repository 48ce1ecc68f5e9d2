"""`compose(overrides)`: the same config `main.py` would run, for notebooks, tests and other projects."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence

from omegaconf import DictConfig

from ..errors import ConfigError

REPO_CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


def conf_dir() -> Path:
    """conf/ of the repository (or $SFP_CONF_DIR); the configs are data, kept beside the package."""
    path = Path(os.environ.get("SFP_CONF_DIR", REPO_CONF_DIR))
    if not (path / "config.yaml").is_file():
        raise ConfigError(f"config folder not found: {path}/config.yaml (set SFP_CONF_DIR to the repository's conf/)")
    return path


def compose(overrides: Sequence[str] = (), config_name: str = "config",
            return_hydra_config: bool = False, config_dir: Optional[Path] = None) -> DictConfig:
    """Compose and validate a run config, e.g. compose(["backbone=vit_l14", "datasets=[voc21]"])."""
    from hydra import compose as hydra_compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from .store import register_schema
    from .validate import validate_config

    register_schema()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(config_dir or conf_dir()), version_base="1.3"):
            cfg = hydra_compose(config_name=config_name, overrides=list(overrides),
                                return_hydra_config=return_hydra_config)
    except (HydraException, OmegaConfBaseException) as exc:
        raise ConfigError(f"config error: {describe_config_exception(exc)}") from exc
    validate_config(cfg)
    return cfg


def describe_config_exception(exc: BaseException) -> str:
    """Hydra wraps the informative OmegaConf message (allowed values, full key) in its cause: show both."""
    parts = [str(exc).strip()]
    cause = exc.__cause__ or exc.__context__
    while cause is not None:
        text = str(cause).strip()
        if text and "$VALUE" not in text and text not in parts[-1]:
            parts.append(text)
        cause = cause.__cause__ or cause.__context__
    return "\n".join(parts)
