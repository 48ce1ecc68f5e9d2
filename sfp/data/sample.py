"""One evaluation sample: an image and its ground truth after label mapping."""
from __future__ import annotations

# The label value every loader writes for unlabelled pixels and the metric ignores.
IGNORE_INDEX = 255

from dataclasses import dataclass

import numpy as np


@dataclass
class Sample:
    image: np.ndarray  # (H, W, 3) uint8 RGB
    label: np.ndarray  # (H, W) int64 after label mapping; 255 = ignore
    name: str  # image file stem, e.g. "2007_000033"
    image_path: str
