"""Plain CLIP: the last block's patch tokens, projected (the weakest baseline of the field)."""
from __future__ import annotations

from .base import DenseMethod, register_method


@register_method("clip")
class CLIPDense(DenseMethod):
    def forward_features(self, images):
        trace = self.tower.run(images, attention_layers=self.stats_layers())
        tokens = self.tower.project(trace.tokens[-1])
        return tokens[:, 1:], self.add_stats({"grid_size": trace.grid, "cls_embedding": tokens[:, 0]}, trace)
