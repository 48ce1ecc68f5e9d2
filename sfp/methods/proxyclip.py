"""ProxyCLIP (docs/methods.md, "ProxyCLIP"): a vision foundation model's patch similarities as the attention of
CLIP's last block.

The VFM (`vfm` group) sees the same crop; its final-norm patch tokens give cosine similarities S (N_v x N_v),
A = softmax over rows of gamma * (S - beta * mean S) with negative entries masked out. CLIP's last block keeps
only its values of the patch tokens, resized bilinearly from CLIP's grid to the VFM's; out_proj(A v) then
ln_post and proj give features on the VFM's grid (no residual, no MLP). Per image (the release pools the mean
over its batch of one).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from ..config.checks import positive
from ..config.schema import MethodSettings, StatsConfig
from ..errors import ConfigError
from ..models.vfm import VFMTower
from ..models.vit import BlockTrace, TrunkPlan
from .base import DenseMethod, register_method


@dataclass
class ProxyCLIPSettings(MethodSettings):
    beta: float = 1.2  # similarities below beta times their mean are masked out
    gamma: float = 3.0  # inverse temperature of the proxy attention
    # a token whose whole row is masked (beta * mean S >= 1, e.g. a uniform crop) attends to itself; the release
    # gives NaN there (false: keep the release's NaN, which stops the run)
    keep_self: bool = True

    def validate(self, prefix: str = "method") -> None:
        positive(f"{prefix}.beta", self.beta)
        positive(f"{prefix}.gamma", self.gamma)


@register_method("proxyclip")
class ProxyCLIPDense(DenseMethod):
    Settings = ProxyCLIPSettings
    components = ("vfm",)

    def __init__(self, tower, settings: ProxyCLIPSettings, stats: StatsConfig, *, vfm: Optional[VFMTower]):
        super().__init__(tower, settings, stats)
        if vfm is None:
            raise ConfigError("config error: method proxyclip needs a vision foundation model: set vfm=dino_b8 "
                              "(the release's default), vfm=dinov2_b14 or vfm=custom")
        self.vfm = vfm

    @property
    def output_patch_size(self) -> Tuple[int, int]:
        return self.vfm.patch_size

    def trunk_plan(self) -> TrunkPlan:
        return TrunkPlan(self.tower.depth - 1, frozenset(self.stats_layers()), embed=self._embed,
                         embed_key="pos:offset")

    def _embed(self, images, extra_tokens=0):
        return self.tower.embed(images, "offset", extra_tokens)

    def vfm_features(self, trace: BlockTrace) -> torch.Tensor:
        """(B, D_v, h_v, w_v), computed once per batch for every variant with this VFM."""
        key = ("vfm_features", id(self.vfm), id(trace.images))
        if key not in trace.memo:
            trace.memo[key] = self.vfm.patch_features(trace.images)
        return trace.memo[key]

    def features_from_trace(self, trace: BlockTrace):
        tower, s = self.tower, self.settings
        last = tower.depth - 1
        guide = self.vfm_features(trace)
        b, _, vh, vw = guide.shape
        normed = F.normalize(guide.flatten(2), dim=1)  # (B, D_v, N_v)
        similarity = normed.transpose(1, 2) @ normed  # (B, N_v, N_v)
        logits = (similarity - similarity.mean(dim=(1, 2), keepdim=True) * s.beta) * s.gamma
        masked = logits < 0
        if s.keep_self:  # the diagonal (cosine 1, the row's largest) is masked only when the whole row is
            masked &= ~torch.eye(masked.shape[-1], dtype=torch.bool, device=masked.device)
        attention = torch.softmax(logits.masked_fill(masked, float("-inf")), dim=-1)
        _, _, v = tower.qkv(last, tower.ln_1(last, trace.tokens[-1]))  # (B, heads, 1 + N, d)
        gh, gw = trace.grid
        heads, d = v.shape[1], v.shape[-1]
        v = v[:, :, 1:].reshape(b * heads, gh, gw, d).permute(0, 3, 1, 2)
        v = F.interpolate(v, size=(vh, vw), mode="bilinear", align_corners=False)
        v = v.reshape(b, heads, d, vh * vw).transpose(-2, -1)  # (B, heads, N_v, d)
        out = tower.out_proj(last, attention[:, None] @ v)
        aux = {"grid_size": (vh, vw), "clip_grid_size": trace.grid}
        return tower.project(out), self.add_stats(aux, trace)
