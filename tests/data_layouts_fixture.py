"""Builds tiny copies of the benchmarks' real on-disk layouts (a few 20x30 images) for tests.

`build_layout(key, data_root)` writes the files below `data_root` exactly where the conf file's root
points, and returns the expected (name, raw label) pairs in dataset order.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
from omegaconf import OmegaConf
from PIL import Image

from sfp.data.palette import voc_palette

from sfp.config.schema import DatasetConfig

CONF_DIR = Path(__file__).resolve().parents[1] / "conf" / "datasets"
KEYS = ["voc21", "voc20", "context60", "context59", "coco_object", "coco_stuff", "cityscapes", "ade20k"]
H, W = 20, 30

# Raw label values a valid file may hold (before reduce_zero_label); 255 is added separately.
RAW_VALUES = {
    "voc21": 21, "voc20": 21, "context60": 60, "context59": 60,
    "coco_object": 81, "coco_stuff": 171, "cityscapes": 19, "ade20k": 151,
}
SUBDIR = {
    "voc21": "VOCdevkit/VOC2012", "voc20": "VOCdevkit/VOC2012",
    "context60": "VOCdevkit/VOC2010", "context59": "VOCdevkit/VOC2010",
    "coco_object": "coco_stuff164k", "coco_stuff": "coco_stuff164k",
    "cityscapes": "cityscapes", "ade20k": "ADEChallengeData2016",
}


@dataclass
class Entry:
    name: str
    image_path: Path
    label_path: Path
    raw_label: np.ndarray  # values as stored in the file




def write_image(path: Path, seed: int, size=(H, W)) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(seed).integers(0, 256, size=(*size, 3), dtype=np.uint8)
    Image.fromarray(arr).save(path)
    return arr


def write_label(path: Path, label: np.ndarray, palette: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(label.astype(np.uint8))  # mode "L"
    if palette:
        img.putpalette(voc_palette())  # turns the "L" image into "P" with the same indices
    img.save(path)


def make_label(n_values: int, seed: int, size=(H, W)) -> np.ndarray:
    h, w = size
    label = (np.arange(h * w).reshape(h, w) * 7 + seed * 13) % n_values
    label[0, :5] = 255
    label[1, 0] = 0
    label[1, 1] = n_values - 1
    return label.astype(np.uint8)


def layout_root(key: str, data_root: Path) -> Path:
    return Path(data_root) / SUBDIR[key]


def build_layout(key: str, data_root: Path, n: int = 3) -> List[Entry]:
    root = layout_root(key, data_root)
    n_values = RAW_VALUES[key]
    entries: List[Entry] = []
    if key in ("voc21", "voc20", "context60", "context59"):
        voc = key.startswith("voc")
        label_dir = "SegmentationClass" if voc else "SegmentationClassContext"
        split_dir = "ImageSets/Segmentation" if voc else "ImageSets/SegmentationContext"
        # Deliberately not sorted: the split file's order is the dataset's order.
        ids = ["2008_000009", "2007_000033", "2008_000123"][:n]
        for s, i in enumerate(ids):
            img, lab = root / "JPEGImages" / f"{i}.jpg", root / label_dir / f"{i}.png"
            write_image(img, s)
            label = make_label(n_values, s)
            write_label(lab, label, palette=voc)
            entries.append(Entry(i, img, lab, label))
        (root / split_dir).mkdir(parents=True, exist_ok=True)
        (root / split_dir / "val.txt").write_text("\n".join(ids) + "\n")
        # An image outside the split must not be picked up.
        write_image(root / "JPEGImages" / "2011_999999.jpg", 99)
        return entries
    if key in ("coco_object", "coco_stuff", "ade20k"):
        if key == "ade20k":
            img_dir, lab_dir = root / "images/validation", root / "annotations/validation"
            stems = [f"ADE_val_{i:08d}" for i in (2, 1, 3)][:n]
            suffix = ".png"
        else:
            img_dir, lab_dir = root / "images/val2017", root / "annotations/val2017"
            stems = ["000000000285", "000000000139", "000000000632"][:n]
            suffix = "_instanceTrainIds.png" if key == "coco_object" else "_labelTrainIds.png"
        for s, stem in enumerate(stems):
            img, lab = img_dir / f"{stem}.jpg", lab_dir / f"{stem}{suffix}"
            write_image(img, s)
            label = make_label(n_values, s)
            write_label(lab, label)
            entries.append(Entry(stem, img, lab, label))
        return sorted(entries, key=lambda e: e.name)
    if key == "cityscapes":
        frames = [("lindau", "lindau_000000_000019"), ("frankfurt", "frankfurt_000001_000538"),
                  ("frankfurt", "frankfurt_000000_000294")][:n]
        for s, (city, x) in enumerate(frames):
            img = root / "leftImg8bit/val" / city / f"{x}_leftImg8bit.png"
            lab = root / "gtFine/val" / city / f"{x}_gtFine_labelTrainIds.png"
            write_image(img, s)
            label = make_label(n_values, s)
            write_label(lab, label)
            # The other gtFine files sit beside the train-id map in real downloads.
            write_label(lab.parent / f"{x}_gtFine_labelIds.png", label)
            entries.append(Entry(f"{x}_leftImg8bit", img, lab, label))
        return sorted(entries, key=lambda e: e.name)
    raise KeyError(key)


def load_conf(key: str, data_root: Optional[Path] = None):
    """The conf file's dataset node, with paths.data_root set, as a DatasetConfig-typed node."""
    node = OmegaConf.load(CONF_DIR / f"{key}.yaml")
    full = OmegaConf.merge({"paths": {"data_root": str(data_root or "data")}}, node)
    OmegaConf.resolve(full)
    return OmegaConf.merge(OmegaConf.structured(DatasetConfig), full[key])


def expected_label(key: str, raw: np.ndarray) -> np.ndarray:
    label = raw.astype(np.int64)
    if load_conf(key).reduce_zero_label:
        out = label - 1
        out[label == 0] = 255
        out[label == 255] = 255
        return out
    return label


def conf_values(key: str) -> Dict[str, object]:
    return OmegaConf.to_container(OmegaConf.load(CONF_DIR / f"{key}.yaml")[key])
