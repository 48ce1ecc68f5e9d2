"""Peer methods that change only the last block (sfp-method.md, "Peer methods as presets"): blocks 0..L-2 run
normally; the last block attends with its own W over all 1 + N tokens. "Reduced" keeps only
ln_post(out_proj(W v)) @ proj; "full" keeps the residual and the MLP."""
from __future__ import annotations

from abc import abstractmethod
from typing import ClassVar, Optional, Tuple

import torch

from .base import DenseMethod, register_method


class LastBlockMethod(DenseMethod):
    full: ClassVar[bool] = False

    @abstractmethod
    def attention(self, q: torch.Tensor, k: torch.Tensor, grid: Tuple[int, int]) -> Optional[torch.Tensor]:
        """W per head, (B, heads, T, T); None means identity (each token attends only to itself)."""

    def forward_features(self, images):
        tower = self.tower
        last = tower.depth - 1
        trace = tower.run(images, num_blocks=last, attention_layers=self.stats_layers())
        h = trace.tokens[-1]
        q, k, v = tower.qkv(last, tower.ln_1(last, h))
        weights = self.attention(q, k, trace.grid)
        out = tower.out_proj(last, v if weights is None else weights @ v)
        tokens = tower.project(tower.residual_mlp(last, h, out) if self.full else out)
        return tokens[:, 1:], self.add_stats({"grid_size": trace.grid, "cls_embedding": tokens[:, 0]}, trace)


@register_method("maskclip")
class MaskCLIPDense(LastBlockMethod):
    """MaskCLIP: the value path only."""

    def attention(self, q, k, grid):
        return None


@register_method("clearclip")
class ClearCLIPDense(LastBlockMethod):
    """ClearCLIP: query-query attention, reduced."""

    def attention(self, q, k, grid):
        return self.tower.self_attention(q, q)


@register_method("sclip")
class SCLIPDense(LastBlockMethod):
    """SCLIP: q-q plus k-k attention (a sum, as released), full block."""

    full = True

    def attention(self, q, k, grid):
        return self.tower.self_attention(q, q) + self.tower.self_attention(k, k)


@register_method("naclip")
class NACLIPDense(LastBlockMethod):
    """NACLIP: key-key attention plus a Gaussian neighbourhood prior over patch positions, reduced.
    (NACLIP's release also applies PAMR post-processing by default; here that is `inference.pamr`, off.)"""

    def attention(self, q, k, grid):
        logits = (k * self.tower.head_dim**-0.5) @ k.transpose(-2, -1)
        return torch.softmax(logits + gaussian_neighbourhood(grid, float(self.cfg.method.naclip_sigma), k), dim=-1)


def gaussian_neighbourhood(grid: Tuple[int, int], sigma: float, like: torch.Tensor) -> torch.Tensor:
    """(1+N, 1+N) Omega: exp(-d^2 / (2 sigma^2)) between patch grid positions, 0 for pairs involving CLS."""
    gh, gw = grid
    rows = torch.arange(gh, device=like.device, dtype=like.dtype).repeat_interleave(gw)
    cols = torch.arange(gw, device=like.device, dtype=like.dtype).repeat(gh)
    squared = (rows[:, None] - rows[None]) ** 2 + (cols[:, None] - cols[None]) ** 2
    omega = torch.zeros(gh * gw + 1, gh * gw + 1, device=like.device, dtype=like.dtype)
    omega[1:, 1:] = torch.exp(-squared / (2 * sigma**2))
    return omega
