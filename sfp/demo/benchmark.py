"""Write the synthetic demo benchmark in the PASCAL VOC 2012 on-disk layout.

    {voc_root}/JPEGImages/{id}.jpg                 RGB, JPEG quality 95
    {voc_root}/SegmentationClass/{id}.png          palette PNG (mode "P"): class index per
                                                   pixel, 255 (ignore) on a thin band along
                                                   every object boundary, as in VOC
    {voc_root}/ImageSets/Segmentation/{split}.txt  image ids, one per line

with ``voc_root = {cache_dir}/demo/VOCdevkit/VOC2012``. Ids are ``demo_{split}_{index:04d}``.
Each split renders its own seed stream of :mod:`sfp.demo.scenes` (the model's training
scenes use yet another stream), so val scenes are never seen in training.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, List

import numpy as np
from PIL import Image

from sfp.data.palette import voc_palette

from sfp.demo import scenes

#: seed stream of each split
SPLIT_SEEDS: Dict[str, int] = {"train": 2, "val": 1}


def _print(msg: str) -> None:
    print(msg, flush=True)


@dataclass(frozen=True)
class BenchmarkSettings:
    """Settings of the written benchmark (part of the demo manifest)."""

    num_train: int = 40
    num_val: int = 50
    scene: scenes.SceneSpec = field(default_factory=scenes.SceneSpec)
    border: int = 2  # ignore band half-width (px)
    jpeg_quality: int = 95




def _atomic_save(img: Image.Image, path: Path, **kwargs) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    img.save(tmp, format=kwargs.pop("format"), **kwargs)
    os.replace(tmp, path)


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def image_ids(split: str, n: int) -> List[str]:
    return [f"demo_{split}_{i:04d}" for i in range(n)]


def write_benchmark(
    voc_root: str | Path,
    settings: BenchmarkSettings = BenchmarkSettings(),
    log: Callable[[str], None] = _print,
) -> Path:
    """Render and write both splits under ``voc_root``; returns ``voc_root``.

    Every file is written to a temporary name and renamed into place; the split lists are
    written last, after all their images.
    """
    root = Path(voc_root)
    jpg_dir = root / "JPEGImages"
    seg_dir = root / "SegmentationClass"
    set_dir = root / "ImageSets" / "Segmentation"
    for d in (jpg_dir, seg_dir, set_dir):
        d.mkdir(parents=True, exist_ok=True)
    palette = voc_palette()
    for split, n in (("train", settings.num_train), ("val", settings.num_val)):
        ids = image_ids(split, n)
        for i, image_id in enumerate(ids):
            img, lab = scenes.render_scene(SPLIT_SEEDS[split], i, settings.scene)
            gt = scenes.ignore_borders(lab, settings.border) if settings.border > 0 else lab
            _atomic_save(Image.fromarray(img, "RGB"), jpg_dir / f"{image_id}.jpg",
                         format="JPEG", quality=settings.jpeg_quality)
            png = Image.frombytes("P", (gt.shape[1], gt.shape[0]), np.ascontiguousarray(gt, np.uint8).tobytes())
            png.putpalette(palette)
            _atomic_save(png, seg_dir / f"{image_id}.png", format="PNG")
        _atomic_write_text(set_dir / f"{split}.txt", "".join(f"{i}\n" for i in ids))
        log(f"[demo/benchmark] wrote {n} {split} images")
    return root


def settings_dict(settings: BenchmarkSettings) -> dict:
    return asdict(settings)
