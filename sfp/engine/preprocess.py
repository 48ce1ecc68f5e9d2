"""Image resizing and normalisation as the OVSS protocol does it (mmseg-style keep-ratio resize)."""
from __future__ import annotations

from typing import Tuple

import numpy as np
import torch
import torch.nn.functional as F

from ..models.vit import CLIP_MEAN, CLIP_STD


def rescaled_size(height: int, width: int, short_side: int, max_long_side: int) -> Tuple[int, int]:
    """sf = min(max_long / long, short / short); new size rounded half up, as mmcv's rescale_size."""
    scale = min(max_long_side / max(height, width), short_side / min(height, width))
    return int(height * scale + 0.5), int(width * scale + 0.5)


def resize_image(image: np.ndarray, size: Tuple[int, int], device="cpu") -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, h, w) float in [0, 255], bilinear without antialiasing, rounded like uint8."""
    tensor = torch.from_numpy(np.ascontiguousarray(image)).to(device).permute(2, 0, 1).float()
    if tuple(size) == tuple(tensor.shape[1:]):
        return tensor
    resized = F.interpolate(tensor[None], size=size, mode="bilinear", align_corners=False, antialias=False)[0]
    # OpenCV resizes uint8 images and rounds; emulate so results match the field's pipeline.
    return resized.round_().clamp_(0, 255)


def normalize(images: torch.Tensor) -> torch.Tensor:
    """[0, 255] RGB (..., 3, H, W) -> CLIP-normalised."""
    mean = torch.tensor(CLIP_MEAN, device=images.device, dtype=images.dtype).view(3, 1, 1) * 255
    std = torch.tensor(CLIP_STD, device=images.device, dtype=images.dtype).view(3, 1, 1) * 255
    return (images - mean) / std
