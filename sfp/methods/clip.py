"""Plain CLIP: the last block's patch tokens, projected (the weakest baseline of the field)."""
from __future__ import annotations

from ..models.vit import TrunkPlan
from .base import DenseMethod, register_method


@register_method("clip")
class CLIPDense(DenseMethod):
    def trunk_plan(self) -> TrunkPlan:
        return TrunkPlan(self.tower.depth, frozenset(self.stats_layers()))

    def features_from_trace(self, trace):
        tokens = self.tower.project(trace.tokens[-1])
        return tokens[:, 1:], self.add_stats({"grid_size": trace.grid, "cls_embedding": tokens[:, 0]}, trace)
