"""Puts the repository's `experiments/` folder on Hydra's config search path, so the named studies in
`experiments/experiment/<name>.yaml` are the config group `experiment`:

    python main.py -m +experiment=ablation_components     # from any working directory
    sfp.compose(["+experiment=ablation_components"])

A relative `hydra.searchpath: [file://experiments]` in conf/config.yaml would resolve against the working
directory (Hydra's file sources are plain paths), so the absolute path is computed here: the `experiments/`
folder beside the sfp config folder that Hydra was started with (the checkout's `conf/`, the installed
package's `sfp/conf`, or `$SFP_CONF_DIR`). Hydra finds this plugin through the one-line module
`hydra_plugins/sfp_searchpath/__init__.py` (Hydra imports every module of the `hydra_plugins` namespace).
Other Hydra applications in the same environment are left alone: the path is added only when the primary
config folder is sfp's.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Optional

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin

from .locations import PACKAGE_DIR, checkout_root, conf_dir

PROVIDER = "sfp-experiments"
GROUP = "experiment"


def _sfp_conf_dirs() -> Iterable[Path]:
    yield conf_dir()
    yield PACKAGE_DIR / "conf"
    checkout = checkout_root()
    if checkout is not None:
        yield checkout / "conf"


def experiments_dir_for(main_config_dir: str) -> Optional[Path]:
    """`<parent>/experiments` for sfp's config folder `<parent>/conf` (None for any other folder or when
    that experiments folder does not exist)."""
    if main_config_dir.startswith("file://"):
        main_config_dir = main_config_dir[len("file://"):]
    elif "://" in main_config_dir:
        return None  # a pkg:// or structured:// primary config is not sfp's conf/ folder
    main = Path(main_config_dir).resolve()
    if not any(main == conf.resolve() for conf in _sfp_conf_dirs()):
        return None
    experiments = main.parent / "experiments"
    return experiments if (experiments / GROUP).is_dir() else None


class SFPExperimentsSearchPathPlugin(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        for element in search_path.get_path():
            if element.provider != "main" or element.path is None:
                continue
            experiments = experiments_dir_for(element.path)
            if experiments is not None:
                search_path.append(provider=PROVIDER, path=f"file://{experiments}")
            return
