"""A picture of predicted masks: for a few benchmark images, the image, its ground truth and each
method's prediction side by side (class colours from the VOC palette, a legend underneath)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Sequence

import numpy as np
from PIL import Image, ImageDraw

from sfp.data.palette import voc_palette
from sfp.data.sample import IGNORE_INDEX

PALETTE = np.array(voc_palette(), dtype=np.uint8).reshape(256, 3)
IGNORE_COLOUR = np.array([255, 255, 255], dtype=np.uint8)


def colourise(labels: np.ndarray) -> np.ndarray:
    out = PALETTE[np.clip(labels, 0, 255).astype(np.int64)]
    out[labels == IGNORE_INDEX] = IGNORE_COLOUR
    return out


def predictions(cfg: Any, methods: Sequence[Dict[str, Any]], indices: Sequence[int], dataset: str = "demo"):
    """({title: [(H, W) prediction per image]}, images, labels, class names) for each method's overrides."""
    from sfp.data.dataset import build_dataset
    from sfp.segmenter import Segmenter

    data = build_dataset(cfg.datasets[dataset], dataset)
    samples = [data[i] for i in indices]
    out: Dict[str, List[np.ndarray]] = {}
    for method in methods:
        seg = Segmenter(method["cfg"], dataset=dataset)
        out[method["title"]] = seg.predict_batch([s.image for s in samples])
    names = [syn[0] for syn in data.class_names.synonyms]
    return out, [s.image for s in samples], [s.label for s in samples], names


def mask_figure(images: Sequence[np.ndarray], labels: Sequence[np.ndarray], preds: Dict[str, List[np.ndarray]],
                class_names: Sequence[str], path: str | Path, scale: float = 0.5) -> Path:
    """Write a PNG grid: one row per image; columns image, ground truth, then one per method."""
    titles = ["image", "ground truth"] + list(preds)
    h, w = images[0].shape[:2]
    th, tw = int(h * scale), int(w * scale)
    pad, head, legend = 4, 18, 22
    width = len(titles) * (tw + pad) + pad
    height = head + len(images) * (th + pad) + pad + legend
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    for c, title in enumerate(titles):
        draw.text((pad + c * (tw + pad) + 2, 3), title, fill="black")
    for r, (image, label) in enumerate(zip(images, labels)):
        tiles = [image, colourise(label)] + [colourise(p[r]) for p in preds.values()]
        for c, tile in enumerate(tiles):
            tile_img = Image.fromarray(np.ascontiguousarray(tile)).resize((tw, th), Image.NEAREST)
            canvas.paste(tile_img, (pad + c * (tw + pad), head + pad + r * (th + pad)))
    x, y = pad, height - legend + 4
    for k, name in enumerate(class_names):
        draw.rectangle([x, y, x + 12, y + 12], fill=tuple(int(v) for v in PALETTE[k]), outline="black")
        draw.text((x + 15, y), name, fill="black")
        x += 15 + 7 * len(name) + 12
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path
