"""MaskCLIP: the last block keeps only its value path (each token attends to itself), no residual, no MLP."""
from __future__ import annotations

from .base import DenseMethod, register_method


@register_method("maskclip")
class MaskCLIPDense(DenseMethod):
    def forward_features(self, images):
        tower = self.tower
        last = tower.depth - 1
        trace = tower.run(images, num_blocks=last)
        _, _, v = tower.qkv(last, tower.ln_1(last, trace.tokens[-1]))
        tokens = tower.project(tower.out_proj(last, v))
        return tokens[:, 1:], {"grid_size": trace.grid, "cls_embedding": tokens[:, 0]}
