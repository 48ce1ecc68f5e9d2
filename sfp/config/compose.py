"""Hydra composition of the run config, for notebooks, tests and other projects (no typed conversion here:
`sfp.compose` in `sfp.assembly` adds it)."""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, List, Optional, Sequence

from omegaconf import DictConfig

from ..errors import ConfigError
from .locations import conf_dir


@contextmanager
def _hydra(config_dir: Optional[Path], config_name: str) -> Iterator[None]:
    """Hydra initialised on the config folder; its composition errors become ConfigError."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from .store import register_schema

    folder = Path(config_dir or conf_dir())
    if not (folder / f"{config_name}.yaml").is_file():
        raise ConfigError(f"config folder not found: {folder}/{config_name}.yaml "
                          "(set SFP_CONF_DIR to the repository's conf/)")
    register_schema()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(folder), version_base="1.3"):
            yield
    except (HydraException, OmegaConfBaseException) as exc:
        raise ConfigError(f"config error: {describe_config_exception(exc)}") from exc


def compose_config(overrides: Sequence[str] = (), config_name: str = "config",
                   return_hydra_config: bool = False, config_dir: Optional[Path] = None) -> DictConfig:
    """The composed config main.py would run, e.g. compose_config(["backbone=vit_l14", "datasets=[voc21]"])."""
    from hydra import compose as hydra_compose

    with _hydra(config_dir, config_name):
        return hydra_compose(config_name=config_name, overrides=list(overrides),
                             return_hydra_config=return_hydra_config)


def sweep_jobs(overrides: Sequence[str] = (), config_name: str = "config",
               config_dir: Optional[Path] = None) -> List[List[str]]:
    """The jobs `python main.py -m <overrides>` launches (an experiment's sweep parameters included), each as
    its list of overrides, in Hydra's order."""
    from hydra import compose as hydra_compose
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    fixed = [o for o in overrides if "," not in o and "glob(" not in o]  # the sweep's axes are expanded below
    with _hydra(config_dir, config_name):
        cfg = hydra_compose(config_name=config_name, overrides=fixed, return_hydra_config=True)
        params = [f"{key}={value}" for key, value in (cfg.hydra.sweeper.params or {}).items()]
        parser = OverridesParser.create(config_loader=GlobalHydra.instance().config_loader())
        batches = BasicSweeper.split_arguments(parser.parse_overrides(params + list(overrides)), None)
    return [list(job) for batch in batches for job in batch]


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
