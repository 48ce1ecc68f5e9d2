"""A vision foundation model (DINO / DINOv2 ViT, a timm `VisionTransformer`) opened up for the methods
that read one (docs/methods.md).

`VFMTower.patch_features` takes the CLIP-normalised crops CLIP sees, re-normalises them for the VFM, runs every
block and returns the final-norm patch tokens as a (B, D, g_h, g_w) map, as the DINO and DINOv2 releases'
`get_intermediate_layers` give them. The positional embedding is resized the way the family's release does
(bicubic with DINO's +0.1 offset, or by size with antialiasing for DINOv2 with registers), not timm's way, so
the features equal the release's for the same weights.
"""
from __future__ import annotations

from typing import Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import WeightsError
from .vit import CLIP_MEAN, CLIP_STD


class VFMTower(nn.Module):
    def __init__(self, vit: nn.Module, name: str, mean: Sequence[float], std: Sequence[float],
                 pos_offset: float, pos_antialias: bool):
        super().__init__()
        for part in ("patch_embed", "blocks", "norm", "pos_embed", "cls_token"):
            if getattr(vit, part, None) is None:
                raise WeightsError(f"vfm {name!r}: the timm model has no {part}; only ViTs with a class token "
                                   "are supported")
        self.vit = vit
        self.name = name
        self.source = ""  # where the weights came from (set by the loader), for the results record
        self.patch_size: Tuple[int, int] = tuple(vit.patch_embed.patch_size)
        self.num_prefix_tokens = int(vit.num_prefix_tokens)
        self.pos_offset = pos_offset
        self.pos_antialias = pos_antialias
        # crop (CLIP-normalised) -> pixels -> the VFM's normalisation, as one affine map per channel
        clip_mean, clip_std = torch.tensor(CLIP_MEAN), torch.tensor(CLIP_STD)
        mean, std = torch.tensor(list(mean), dtype=torch.float32), torch.tensor(list(std), dtype=torch.float32)
        self.register_buffer("_clip_std", clip_std.view(1, 3, 1, 1), persistent=False)
        self.register_buffer("_clip_mean", clip_mean.view(1, 3, 1, 1), persistent=False)
        self.register_buffer("_mean", mean.view(1, 3, 1, 1), persistent=False)
        self.register_buffer("_std", std.view(1, 3, 1, 1), persistent=False)

    @property
    def native_grid(self) -> Tuple[int, int]:
        return tuple(self.vit.patch_embed.grid_size)

    def renormalise(self, crops: torch.Tensor) -> torch.Tensor:
        pixels = crops * self._clip_std.to(crops.dtype) + self._clip_mean.to(crops.dtype)
        return (pixels - self._mean.to(crops.dtype)) / self._std.to(crops.dtype)

    def positional_embedding(self, grid: Tuple[int, int]) -> torch.Tensor:
        """(1, P + N, D) positional terms of the tokens, P = prefix tokens that carry one (0 with registers)."""
        vit = self.vit
        pos = vit.pos_embed
        with_class = not getattr(vit, "no_embed_class", False)
        prefix, patches = (pos[:, :1], pos[:, 1:]) if with_class else (pos[:, :0], pos)
        native = self.native_grid
        if tuple(grid) == native and grid[0] == grid[1]:
            return pos
        gh, gw = native
        dim = patches.shape[-1]
        patches = patches.float().reshape(1, gh, gw, dim).permute(0, 3, 1, 2)
        if self.pos_offset:
            scale = ((grid[0] + self.pos_offset) / gh, (grid[1] + self.pos_offset) / gw)
            patches = F.interpolate(patches, scale_factor=scale, mode="bicubic", antialias=self.pos_antialias)
        else:
            patches = F.interpolate(patches, size=tuple(grid), mode="bicubic", antialias=self.pos_antialias)
        patches = patches.permute(0, 2, 3, 1).reshape(1, grid[0] * grid[1], dim).to(pos.dtype)
        return torch.cat([prefix, patches], dim=1)

    def tokens(self, crops: torch.Tensor) -> Tuple[torch.Tensor, Tuple[int, int]]:
        """Prefix tokens (CLS, registers) then patches, after every block and the final norm."""
        vit = self.vit
        x = vit.patch_embed.proj(self.renormalise(crops))
        grid = (x.shape[-2], x.shape[-1])
        x = x.flatten(2).transpose(1, 2)
        pos = self.positional_embedding(grid).to(x.dtype)
        cls = vit.cls_token.to(x.dtype).expand(x.shape[0], -1, -1)
        registers = getattr(vit, "reg_token", None)
        if getattr(vit, "no_embed_class", False):
            prefix = [cls] + ([registers.to(x.dtype).expand(x.shape[0], -1, -1)] if registers is not None else [])
            x = torch.cat(prefix + [x + pos], dim=1)
        else:
            x = torch.cat([cls, x], dim=1) + pos
            if registers is not None:
                x = torch.cat([x[:, :1], registers.to(x.dtype).expand(x.shape[0], -1, -1), x[:, 1:]], dim=1)
        x = vit.norm_pre(x) if hasattr(vit, "norm_pre") else x
        for block in vit.blocks:
            x = block(x)
        return vit.norm(x), grid

    def patch_features(self, crops: torch.Tensor) -> torch.Tensor:
        """(B, D, g_h, g_w) final-norm patch tokens of CLIP-normalised crops (B, 3, H, W)."""
        tokens, (gh, gw) = self.tokens(crops)
        patches = tokens[:, self.num_prefix_tokens:]
        return patches.transpose(1, 2).reshape(patches.shape[0], -1, gh, gw)
