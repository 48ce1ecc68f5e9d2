"""Methods that change only the last block (docs/methods.md, "Peer methods"): blocks 0..L-2 run normally; the
last block attends with the method's own W over all 1 + N tokens. "Reduced" keeps only
ln_post(out_proj(W v)) @ proj; "full" keeps the residual and the MLP."""
from __future__ import annotations

from abc import abstractmethod
from typing import ClassVar, Optional, Tuple

import torch

from ..models.vit import TrunkPlan
from .base import DenseMethod


class LastBlockMethod(DenseMethod):
    full: ClassVar[bool] = False

    @abstractmethod
    def attention(self, q: torch.Tensor, k: torch.Tensor, grid: Tuple[int, int]) -> Optional[torch.Tensor]:
        """W per head, (B, heads, T, T); None means identity (each token attends only to itself)."""

    def trunk_plan(self) -> TrunkPlan:
        return TrunkPlan(self.tower.depth - 1, frozenset(self.stats_layers()))

    def features_from_trace(self, trace):
        tower = self.tower
        last = tower.depth - 1
        h = trace.tokens[-1]
        q, k, v = tower.qkv(last, tower.ln_1(last, h))
        weights = self.attention(q, k, trace.grid)
        out = tower.out_proj(last, v if weights is None else weights @ v)
        tokens = tower.project(tower.residual_mlp(last, h, out) if self.full else out)
        return tokens[:, 1:], self.add_stats({"grid_size": trace.grid, "cls_embedding": tokens[:, 0]}, trace)
