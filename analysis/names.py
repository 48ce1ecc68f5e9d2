"""Display names and canonical orders: datasets, methods, presets and backbones as the tables show them."""
from __future__ import annotations

from typing import Dict, Iterable, List, Mapping, Optional

# The eight benchmarks in the order papers of this line print them.
BENCHMARKS = ("voc21", "context60", "coco_object", "voc20", "context59", "coco_stuff", "cityscapes", "ade20k")
DATASET_LABELS = {
    "voc21": "VOC21", "context60": "Context60", "coco_object": "Object", "voc20": "VOC20",
    "context59": "Context59", "coco_stuff": "Stuff", "cityscapes": "City", "ade20k": "ADE",
}
WITH_BACKGROUND = ("voc21", "context60", "coco_object")
GROUP_WITH_BACKGROUND = "with background"
GROUP_WITHOUT_BACKGROUND = "without background"
GROUP_OTHER = "other"

# Preset (choices.method) -> the method name the published table uses.
PRESET_TO_PUBLISHED = {
    "clip": "CLIP", "maskclip": "MaskCLIP", "sclip": "SCLIP", "clearclip": "ClearCLIP", "naclip": "NACLIP",
    "sc_clip": "SC-CLIP", "sfp": "SFP", "sfp_early": "SFP",
}
PRESET_LABELS = {"sfp_early": "sfp_early (Dec 2025 code state)"}
# Methods in the order of the main table (published-only methods such as ProxyCLIP included).
METHOD_ORDER = ("CLIP", "MaskCLIP", "SCLIP", "ClearCLIP", "NACLIP", "ProxyCLIP", "SC-CLIP", "SFP")
PRESET_ORDER = ("clip", "maskclip", "sclip", "clearclip", "naclip", "sc_clip", "sfp", "sfp_early")

BACKBONE_LABELS = {"vit_b16": "ViT-B/16", "vit_l14": "ViT-L/14"}
BACKBONE_ORDER = ("vit_b16", "vit_l14")


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
