"""Outlier detection and the neighbour fill of SFP's mitigator (docs/methods.md, 'SFP: outlier mitigator').

Everything is per image. An outlier set is a padded (B, K) LongTensor of flat patch indices in selection
order plus a (B, K) validity mask, so images with different set sizes share one batch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Tuple

import torch
import torch.nn.functional as F


@dataclass
class OutlierSets:
    indices: torch.Tensor  # (B, K) long, flat patch index p = row * g_w + col; padding entries are 0
    valid: torch.Tensor  # (B, K) bool

    @classmethod
    def empty(cls, batch: int, device) -> "OutlierSets":
        return cls(torch.zeros(batch, 0, dtype=torch.long, device=device),
                   torch.zeros(batch, 0, dtype=torch.bool, device=device))

    def per_image(self) -> List[torch.Tensor]:
        return [idx[ok] for idx, ok in zip(self.indices, self.valid)]

    def mask(self, num_patches: int) -> torch.Tensor:
        """(B, N) bool: True at outlier patches."""
        mask = torch.zeros(self.indices.shape[0], num_patches, dtype=torch.bool, device=self.indices.device)
        return mask.scatter_(1, self.indices, self.valid) if self.indices.numel() else mask

    def counts(self) -> torch.Tensor:
        return self.valid.sum(dim=1)


def som_scores(attention: torch.Tensor, cls_scale: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """From (B, heads, 1+N, 1+N) attention probabilities: c_p = cls_scale * ā[CLS, p] and s_p = ā[p, p]."""
    mean = attention.mean(dim=1)
    c = cls_scale * mean[:, 0, 1:]
    s = mean.diagonal(dim1=1, dim2=2)[:, 1:]
    return c, s


def detect_som(attention: torch.Tensor, top_k: int, cls_scale: float) -> OutlierSets:
    """Patches the CLS query attends to more than they attend to themselves (c_p > s_p), by c_p descending."""
    c, s = som_scores(attention, cls_scale)
    candidate = c > s
    k = min(top_k, c.shape[1])
    ranked = torch.where(candidate, c, torch.full_like(c, float("-inf")))
    values, indices = ranked.topk(k, dim=1, sorted=True)
    return OutlierSets(indices, values > float("-inf"))


def detect_l2(patches: torch.Tensor, top_k: int) -> OutlierSets:
    """The top_k patch tokens of largest L2 norm, in descending order."""
    norms = patches.norm(dim=-1)
    k = min(top_k, norms.shape[1])
    indices = norms.topk(k, dim=1, sorted=True).indices
    return OutlierSets(indices, torch.ones_like(indices, dtype=torch.bool))


def lof_scores(patches: torch.Tensor, neighbours: int) -> torch.Tensor:
    """The released code's local-outlier-factor score under squared Euclidean distance
    (docs/methods.md, 'LOF detector')."""
    x = patches.float()
    distances = torch.cdist(x, x).pow(2)
    n = distances.shape[1]
    k = min(neighbours, n - 1)
    distances.diagonal(dim1=1, dim2=2).fill_(float("inf"))  # "other tokens" only
    nearest = distances.topk(k, dim=2, largest=False, sorted=True)  # (B, N, k)
    k_distance = nearest.values[..., -1]
    reach = torch.maximum(nearest.values, k_distance.unsqueeze(-1))  # the token's own k-distance, as released
    lrd = k / reach.sum(dim=-1)
    lrd_neighbours = torch.gather(lrd.unsqueeze(1).expand(-1, n, -1), 2, nearest.indices)
    return lrd_neighbours.mean(dim=-1) / lrd


def detect_lof(patches: torch.Tensor, neighbours: int, contamination: float) -> OutlierSets:
    """Tokens whose LOF score exceeds the (1 - contamination) quantile, in ascending index order."""
    scores = lof_scores(patches, neighbours)
    threshold = torch.quantile(scores, 1 - contamination, dim=1, keepdim=True, interpolation="linear")
    outlier = scores > threshold
    k = int(outlier.sum(dim=1).max().item()) if outlier.numel() else 0
    positions = torch.arange(scores.shape[1], device=scores.device).expand_as(scores)
    # Sort outliers first by index; non-outliers pushed to the end.
    keys = torch.where(outlier, positions, positions + scores.shape[1])
    indices = keys.sort(dim=1).values[:, :k] % scores.shape[1]
    valid = torch.arange(k, device=scores.device).unsqueeze(0) < outlier.sum(dim=1, keepdim=True)
    return OutlierSets(indices, valid)


_NEIGHBOURS = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 1.0], [1.0, 1.0, 1.0]])


def neighbour_fill(patches: torch.Tensor, grid: Tuple[int, int], outliers: OutlierSets,
                   keep_without_neighbour: bool = True) -> Tuple[torch.Tensor, torch.Tensor]:
    """Replace each outlier by the mean of its in-grid 8-neighbours that are not outliers.

    patches: (B, N, C) in row-major grid order. All replacements read the unmodified tokens. Returns the
    filled patches and, per image, how many outliers had no valid neighbour (kept, or zeroed as released).
    """
    b, n, c = patches.shape
    if outliers.indices.shape[1] == 0:
        return patches, torch.zeros(b, dtype=torch.long, device=patches.device)
    gh, gw = grid
    mask = outliers.mask(n)
    valid = (~mask).to(patches.dtype).view(b, 1, gh, gw)
    grid_tokens = patches.transpose(1, 2).reshape(b, c, gh, gw)
    kernel = _NEIGHBOURS.to(patches.device, patches.dtype).view(1, 1, 3, 3)
    # Zero padding: cells outside the grid are neither summed nor counted.
    sums = F.conv2d((grid_tokens * valid).reshape(b * c, 1, gh, gw), kernel, padding=1).view(b, c, gh, gw)
    counts = F.conv2d(valid, kernel, padding=1)
    means = (sums / counts.clamp(min=1)).reshape(b, c, n).transpose(1, 2)
    counts = counts.reshape(b, n)
    has_neighbour = counts > 0
    replacement = means if keep_without_neighbour else torch.where(
        has_neighbour.unsqueeze(-1), means, torch.zeros_like(means))
    fill_here = mask & (has_neighbour | (not keep_without_neighbour))
    filled = torch.where(fill_here.unsqueeze(-1), replacement, patches)
    without_neighbour = (mask & ~has_neighbour).sum(dim=1)
    return filled, without_neighbour
