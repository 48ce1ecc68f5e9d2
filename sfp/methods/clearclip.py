"""ClearCLIP: query-query attention in the last block (reduced)."""
from __future__ import annotations

from .base import register_method
from .last_block import LastBlockMethod


@register_method("clearclip")
class ClearCLIPDense(LastBlockMethod):
    def attention(self, q, k, grid):
        return self.tower.self_attention(q, q)
