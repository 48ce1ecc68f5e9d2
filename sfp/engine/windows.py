"""Sliding-window geometry (mmseg's slide inference: last window shifted back to the border)."""
from __future__ import annotations

from typing import List, NamedTuple


class Window(NamedTuple):
    top: int
    bottom: int
    left: int
    right: int

    @property
    def size(self):
        return self.bottom - self.top, self.right - self.left


def windows_along(length: int, crop: int, stride: int) -> List[int]:
    """Start offsets along one axis: max(L - crop + stride - 1, 0) // stride + 1 windows, last one clamped."""
    count = max(length - crop + stride - 1, 0) // stride + 1
    return [max(min(i * stride + crop, length) - crop, 0) for i in range(count)]


def sliding_windows(height: int, width: int, crop: int, stride: int) -> List[Window]:
    return [
        Window(top, min(top + crop, height), left, min(left + crop, width))
        for top in windows_along(height, crop, stride)
        for left in windows_along(width, crop, stride)
    ]
