"""NACLIP: key-key attention plus a Gaussian neighbourhood prior over patch positions, reduced.
Its release also applies PAMR post-processing by default; here that is the protocol switch `inference.pamr`."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import torch

from ..config.checks import positive
from ..config.schema import MethodSettings
from .base import register_method
from .last_block import LastBlockMethod


@dataclass
class NACLIPSettings(MethodSettings):
    sigma: float = 5.0  # the Gaussian neighbourhood's standard deviation, in patches

    def validate(self, prefix: str = "method") -> None:
        positive(f"{prefix}.sigma", self.sigma)


@register_method("naclip")
class NACLIPDense(LastBlockMethod):
    Settings = NACLIPSettings

    def attention(self, q, k, grid):
        logits = (k * self.tower.head_dim**-0.5) @ k.transpose(-2, -1)
        return torch.softmax(logits + gaussian_neighbourhood(grid, self.settings.sigma, k), dim=-1)


def gaussian_neighbourhood(grid: Tuple[int, int], sigma: float, like: torch.Tensor) -> torch.Tensor:
    """(1+N, 1+N) Omega: exp(-d^2 / (2 sigma^2)) between patch grid positions, 0 for pairs involving CLS."""
    gh, gw = grid
    rows = torch.arange(gh, device=like.device, dtype=like.dtype).repeat_interleave(gw)
    cols = torch.arange(gw, device=like.device, dtype=like.dtype).repeat(gh)
    squared = (rows[:, None] - rows[None]) ** 2 + (cols[:, None] - cols[None]) ** 2
    omega = torch.zeros(gh * gw + 1, gh * gw + 1, device=like.device, dtype=like.dtype)
    omega[1:, 1:] = torch.exp(-squared / (2 * sigma**2))
    return omega
