"""The standard PASCAL VOC colour map, for writing palette label PNGs the way VOC stores them."""
from __future__ import annotations

from typing import List


def voc_palette() -> List[int]:
    """256 RGB triples, flattened (the bit-interleaved VOC colour map)."""
    palette = []
    for index in range(256):
        r = g = b = 0
        c = index
        for bit in range(8):
            r |= ((c >> 0) & 1) << (7 - bit)
            g |= ((c >> 1) & 1) << (7 - bit)
            b |= ((c >> 2) & 1) << (7 - bit)
            c >>= 3
        palette.extend([r, g, b])
    return palette
