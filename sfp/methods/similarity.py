"""Patch-similarity operations shared by SFP and SC-CLIP (docs/methods.md, 'Shared operations' and
'SFP: attention enhancer')."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def cosine(features: torch.Tensor) -> torch.Tensor:
    """(B, N, C) -> (B, N, N) cosine similarities of the rows."""
    normed = F.normalize(features, dim=-1)
    return normed @ normed.transpose(1, 2)


def threshold(similarity: torch.Tensor, beta: float) -> torch.Tensor:
    """cos_thr: entries strictly below beta become 0."""
    return torch.where(similarity < beta, torch.zeros_like(similarity), similarity)


def aggregate(similarity: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """agg(S, F) = (S / (rowsum(S) + 1e-6)) @ F."""
    return (similarity / (similarity.sum(dim=-1, keepdim=True) + 1e-6)) @ features


def enhancer_attention(similarity: torch.Tensor, temperature: float) -> torch.Tensor:
    """M: Z = t (S - mean S) per image; entries with Z < 0 -> -inf; softmax over rows. (B, N, N)."""
    z = temperature * (similarity - similarity.mean(dim=(1, 2), keepdim=True))
    return torch.softmax(z.masked_fill(z < 0, float("-inf")), dim=-1)
