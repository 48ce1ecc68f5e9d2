"""What the config folder offers, read from its files: method presets, datasets, the benchmark list, backbones.

These files are the registries of presets and datasets (adding one is adding a file), so every list the
analysis, the benchmark or the tests need is derived here instead of being written out.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from omegaconf import OmegaConf

from .locations import conf_dir

METHOD_SETTINGS_ENTRY = "/method_settings@method"
BENCHMARKS_OPTION = "benchmarks"


@dataclass(frozen=True)
class PresetEntry:
    name: str  # the option of the `method` group
    method: str  # the registered method it runs
    label: str  # how tables show it
    published: Optional[str]  # the method name of the published rows it reproduces


@dataclass(frozen=True)
class DatasetEntry:
    key: str
    label: str
    with_background: bool


def _options(group: str, folder: Optional[Path] = None) -> List[Path]:
    return sorted(((folder or conf_dir()) / group).glob("*.yaml"))


def _defaults_list(node: Any) -> List[Any]:
    return list(node.get("defaults", []) or [])


@lru_cache(maxsize=4)
def _presets(folder: Path) -> Tuple[PresetEntry, ...]:
    entries = []
    for path in _options("method", folder):
        node = OmegaConf.to_container(OmegaConf.load(path))
        method = next((d[METHOD_SETTINGS_ENTRY] for d in _defaults_list(node)
                       if isinstance(d, dict) and METHOD_SETTINGS_ENTRY in d), None)
        preset = node.get("preset") or {}
        entries.append(PresetEntry(path.stem, method, preset.get("label") or path.stem, preset.get("published")))
    return tuple(entries)


def presets(folder: Optional[Path] = None) -> Dict[str, PresetEntry]:
    """Every method preset (conf/method/<name>.yaml), by name; `method` is None when a file names none."""
    return {entry.name: entry for entry in _presets(folder or conf_dir())}


@lru_cache(maxsize=4)
def _datasets(folder: Path) -> Tuple[DatasetEntry, ...]:
    entries = []
    for path in _options("datasets", folder):
        node = OmegaConf.to_container(OmegaConf.load(path))
        body = node.get(path.stem)
        if isinstance(body, dict):  # a dataset file; a list option such as benchmarks.yaml has no own key
            entries.append(DatasetEntry(path.stem, body.get("label") or path.stem, bool(body.get("with_background"))))
    return tuple(entries)


def datasets(folder: Optional[Path] = None) -> Dict[str, DatasetEntry]:
    """Every dataset file (conf/datasets/<key>.yaml), by key."""
    return {entry.key: entry for entry in _datasets(folder or conf_dir())}


def benchmarks(folder: Optional[Path] = None) -> List[str]:
    """The benchmark keys of `datasets=benchmarks`, in the order papers print them."""
    node = OmegaConf.to_container(OmegaConf.load((folder or conf_dir()) / "datasets" / f"{BENCHMARKS_OPTION}.yaml"))
    return [str(entry) for entry in _defaults_list(node)]


def backbones(folder: Optional[Path] = None) -> Dict[str, str]:
    """Every backbone option, by name, with its display label."""
    labels = {}
    for path in _options("backbone", folder):
        node = OmegaConf.load(path)
        labels[path.stem] = node.get("label") or path.stem
    return labels
