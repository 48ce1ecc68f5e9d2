"""MaskCLIP: the last block's value path only (reduced)."""
from __future__ import annotations

from .base import register_method
from .last_block import LastBlockMethod


@register_method("maskclip")
class MaskCLIPDense(LastBlockMethod):
    def attention(self, q, k, grid):
        return None
