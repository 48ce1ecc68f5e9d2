"""SCLIP: q-q plus k-k attention (a sum, as released) in the full last block."""
from __future__ import annotations

from .base import register_method
from .last_block import LastBlockMethod


@register_method("sclip")
class SCLIPDense(LastBlockMethod):
    full = True

    def attention(self, q, k, grid):
        return self.tower.self_attention(q, q) + self.tower.self_attention(k, k)
