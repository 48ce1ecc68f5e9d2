"""Display names and canonical orders, derived from the config folder and the published-results file.

Nothing here is a hand-written list: datasets, their labels and background groups come from
conf/datasets/<key>.yaml (the benchmarks and their order from conf/datasets/benchmarks.yaml), presets and
the published method each reproduces from conf/method/<preset>.yaml, backbone labels from
conf/backbone/<name>.yaml, and the order of published methods from analysis/data/published_results.csv.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional

from sfp.config import catalog

PUBLISHED_CSV = Path(__file__).resolve().parent / "data" / "published_results.csv"

# The benchmarks in the order papers of this line print them.
BENCHMARKS = tuple(catalog.benchmarks())
DATASET_LABELS = {key: entry.label for key, entry in catalog.datasets().items()}
WITH_BACKGROUND = tuple(key for key, entry in catalog.datasets().items() if entry.with_background)
GROUP_WITH_BACKGROUND = "with background"
GROUP_WITHOUT_BACKGROUND = "without background"
GROUP_OTHER = "other"


def _published_method_order() -> List[str]:
    with open(PUBLISHED_CSV, newline="", encoding="utf-8") as handle:
        methods = [row["method"] for row in csv.DictReader(handle)]
    return list(dict.fromkeys(methods))


_PRESETS = catalog.presets()
# Preset (choices.method) -> the method name the published table uses.
PRESET_TO_PUBLISHED = {name: entry.published for name, entry in _PRESETS.items() if entry.published}
PRESET_LABELS = {name: entry.label for name, entry in _PRESETS.items() if entry.label != name}
# Methods in the order of the published-results file (published-only methods included), then the rest.
METHOD_ORDER = tuple(dict.fromkeys(_published_method_order() + sorted(set(PRESET_TO_PUBLISHED.values()))))
# Presets in the order of the method they reproduce, then by name.
PRESET_ORDER = tuple(sorted(_PRESETS, key=lambda name: (
    METHOD_ORDER.index(PRESET_TO_PUBLISHED[name]) if name in PRESET_TO_PUBLISHED else len(METHOD_ORDER), name)))

BACKBONE_LABELS = {name: label for name, label in catalog.backbones().items() if label != name}
BACKBONE_ORDER = tuple(sorted(BACKBONE_LABELS))


def dataset_label(key: str) -> str:
    return DATASET_LABELS.get(key, key)


def dataset_group(key: str) -> str:
    if key in WITH_BACKGROUND:
        return GROUP_WITH_BACKGROUND
    if key in BENCHMARKS:
        return GROUP_WITHOUT_BACKGROUND
    return GROUP_OTHER


def order_datasets(keys: Iterable[str]) -> List[str]:
    """The benchmarks in paper order, then any other dataset alphabetically."""
    keys = set(keys)
    return [k for k in BENCHMARKS if k in keys] + sorted(keys - set(BENCHMARKS))


def order_by(values: Iterable[str], canonical: Iterable[str]) -> List[str]:
    """`values` in the order of `canonical`, the rest alphabetically after them."""
    values, canonical = set(values), list(canonical)
    return [v for v in canonical if v in values] + sorted(values - set(canonical))


def preset_label(preset: str) -> str:
    return PRESET_LABELS.get(preset, preset)


def published_method(preset: str) -> str:
    """The published method a preset reproduces; a preset of its own (not published) keeps its name."""
    return PRESET_TO_PUBLISHED.get(preset, preset)


def backbone_label(backbone: str, overrides: Optional[Mapping[str, str]] = None) -> str:
    """vit_b16 -> ViT-B/16; `overrides` maps other backbones (e.g. custom -> ViT-B/16) onto a published one."""
    labels: Dict[str, str] = {**BACKBONE_LABELS, **(overrides or {})}
    return labels.get(backbone, backbone)
