"""PAMR: pixel-adaptive mask refinement (Araslanov & Roth, CVPR 2020), a post-processing some methods' releases
run by default (docs/protocol.md, 'PAMR'). Written from the paper's definition: each refinement step
replaces a pixel's scores by an affinity-weighted mean of its neighbours' scores at several dilations, the
affinities coming from local colour differences normalised by the local colour spread. Off by default
(`inference.pamr`)."""
from __future__ import annotations

from typing import List, Sequence

import torch
import torch.nn.functional as F

# The 8 neighbour offsets of a 3x3 stencil.
_OFFSETS = [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)]


def _neighbours(x: torch.Tensor, dilations: Sequence[int], include_centre: bool = False) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, P, H, W): the values at each neighbour offset times each dilation
    (replicate padding at the border)."""
    height, width = x.shape[-2:]
    shifted: List[torch.Tensor] = []
    offsets = ([(0, 0)] if include_centre else []) + _OFFSETS
    for d in dilations:
        padded = F.pad(x, (d, d, d, d), mode="replicate")
        for dy, dx in offsets:
            shifted.append(padded[..., d + dy * d: d + dy * d + height, d + dx * d: d + dx * d + width])
    return torch.stack(shifted, dim=2)


def pamr(image: torch.Tensor, scores: torch.Tensor, steps: int = 10,
         dilations: Sequence[int] = (8, 16)) -> torch.Tensor:
    """Refine (B, Q, H, W) scores with the (B, 3, H, W) image they belong to."""
    image = image.float()
    differences = (_neighbours(image, dilations) - image.unsqueeze(2)).abs()  # (B, 3, P, H, W)
    spread = _neighbours(image, dilations, include_centre=True).std(dim=2, keepdim=True)  # local colour spread
    affinity = (-differences / (1e-8 + 0.1 * spread)).mean(dim=1, keepdim=True)  # (B, 1, P, H, W)
    affinity = torch.softmax(affinity, dim=2)
    refined = scores.float()
    for _ in range(steps):
        refined = _weighted_neighbour_sum(refined, affinity[:, 0], dilations)
    return refined.to(scores.dtype)


def _weighted_neighbour_sum(x: torch.Tensor, weights: torch.Tensor, dilations: Sequence[int]) -> torch.Tensor:
    """sum_p weights[:, p] * x shifted to neighbour p, one neighbour at a time (scores have many channels)."""
    height, width = x.shape[-2:]
    total = torch.zeros_like(x)
    p = 0
    for d in dilations:
        padded = F.pad(x, (d, d, d, d), mode="replicate")
        for dy, dx in _OFFSETS:
            total += padded[..., d + dy * d: d + dy * d + height, d + dx * d: d + dx * d + width] * weights[:, p:p + 1]
            p += 1
    return total
