"""ResCLIP (docs/methods.md, "ResCLIP"): a training-free base attention in the last block (NACLIP's k-k with a
Gaussian window, ClearCLIP's q-q, or SCLIP's q-q + k-k), plus two switches:

- RCS: the mean q-k attention of intermediate blocks mixed into the last block's attention after its softmax;
- SFR: a first pass of the last block gives a segmentation of the crop (cosine logits against the class text,
  PAMR, softmax, argmax, a confidence threshold, a per-patch vote); patches of one label attend to each other
  more in a second pass (a bias mixed into the attention logits before the softmax).

The release tunes RCS's and SFR's weights and SFR's threshold per dataset: those knobs default to the dataset's
value (`datasets.<key>.method_values.resclip`). Every step is per image, so any batch gives the same features.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, ClassVar, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F

from ..config.checks import at_least, block_indices, check, in_range, positive
from ..config.schema import MethodSettings, StatsConfig
from ..engine.pamr import pamr
from ..models.vit import BlockTrace, TrunkPlan
from .base import DenseMethod, register_method
from .naclip import gaussian_neighbourhood


class ResCLIPBase(str, Enum):
    naclip = "naclip"  # k-k + Gaussian window, reduced block (the release's default, its "resclip" strategy)
    clearclip = "clearclip"  # q-q, reduced block
    sclip = "sclip"  # softmax(q-q) + softmax(k-k), full block (residual and MLP kept)


# The release's RCS blocks (0-based 5..8), used as they are for ViT-B/16 and, as the release does, ViT-L/14.
RELEASE_RCS_LAYERS = [5, 6, 7, 8]


def default_rcs_layers(depth: int) -> List[int]:
    """Blocks 5..8 for backbones of 10 blocks or more (the release's indices); shallower ones: the same
    fraction of the depth (5/12 .. 8/12), at least one block, below the last."""
    if depth >= 10:
        return list(RELEASE_RCS_LAYERS)
    first, last = (5 * depth) // 12, min((8 * depth) // 12, depth - 2)
    return list(range(first, max(last, first) + 1))


@dataclass
class ResCLIPSettings(MethodSettings):
    base: ResCLIPBase = ResCLIPBase.naclip
    sigma: float = 5.0  # the Gaussian window of the naclip base and SFR's blur, in patches (one value, as released)
    rcs: bool = True
    rcs_layers: Optional[List[int]] = None  # None: default_rcs_layers(depth)
    rcs_tau: Optional[float] = None  # RCS mix: A <- tau * ((1 - lambda) * A + lambda * A_rcs); None: the dataset's
    rcs_lambda: Optional[float] = None
    sfr: bool = True
    sfr_tau: Optional[float] = None  # SFR mix of the logits: tau * ((1 - lambda) * logits + lambda * S)
    sfr_lambda: Optional[float] = None
    temp_thd: Optional[float] = None  # first-pass pixels less confident than this take query 0's label
    sfr_logit_scale: float = 40.0  # softmax temperature of the first pass
    sfr_pamr_steps: int = 10  # PAMR of the first pass (the release always runs it)
    sfr_pamr_dilations: List[int] = field(default_factory=lambda: [8, 16])
    separate_entities: bool = True  # decay same-label pairs with no straight same-label path (release: on)
    release_fp16: bool = True  # round the SFR matrix to float16 before mixing, as the release does

    dataset_fields: ClassVar[Tuple[str, ...]] = ("temp_thd", "rcs_tau", "rcs_lambda", "sfr_tau", "sfr_lambda")
    # VOC21's values: for datasets the release did not tune
    fallbacks: ClassVar[Dict[str, Any]] = {"temp_thd": 0.5, "rcs_tau": 2.0, "rcs_lambda": 0.3, "sfr_tau": 2.2,
                                           "sfr_lambda": 0.7}

    def validate(self, prefix: str = "method") -> None:
        positive(f"{prefix}.sigma", self.sigma)
        positive(f"{prefix}.sfr_logit_scale", self.sfr_logit_scale)
        at_least(f"{prefix}.sfr_pamr_steps", self.sfr_pamr_steps, 0)
        check(len(self.sfr_pamr_dilations) > 0 and all(d >= 1 for d in self.sfr_pamr_dilations),
              f"{prefix}.sfr_pamr_dilations", list(self.sfr_pamr_dilations), "a non-empty list of integers >= 1")
        for name in ("rcs_tau", "sfr_tau"):
            if getattr(self, name) is not None:
                positive(f"{prefix}.{name}", getattr(self, name))
        for name in ("rcs_lambda", "sfr_lambda", "temp_thd"):
            if getattr(self, name) is not None:
                in_range(f"{prefix}.{name}", getattr(self, name), 0, 1)
        if self.rcs_layers is not None:
            check(len(self.rcs_layers) > 0, f"{prefix}.rcs_layers", list(self.rcs_layers), "a non-empty list")


@register_method("resclip")
class ResCLIPDense(DenseMethod):
    Settings = ResCLIPSettings
    uses_queries = True  # SFR's first pass

    def __init__(self, tower, settings: ResCLIPSettings, stats: StatsConfig):
        super().__init__(tower, settings, stats)
        self.rcs_layers = (list(settings.rcs_layers) if settings.rcs_layers is not None
                           else default_rcs_layers(tower.depth))
        block_indices("method.rcs_layers", self.rcs_layers, tower.depth)

    def trunk_plan(self) -> TrunkPlan:
        layers = set(self.stats_layers()) | (set(self.rcs_layers) if self.settings.rcs else set())
        return TrunkPlan(self.tower.depth - 1, frozenset(layers), embed=self._embed, embed_key="pos:offset")

    def _embed(self, images, extra_tokens=0):
        return self.tower.embed(images, "offset", extra_tokens)

    def features_from_trace(self, trace: BlockTrace):
        s = self.settings
        x = trace.tokens[-1]
        rcs = torch.stack([trace.attention[j] for j in self.rcs_layers]).mean(0) if s.rcs else None
        aux: Dict[str, Any] = {"grid_size": trace.grid}
        sfr = None
        if s.sfr:
            first, _ = self._last_block(x, trace.grid, rcs, None)
            labels = self._patch_labels(first[:, 1:], trace.images, trace.grid)
            aux["sfr_labels"] = labels
            sfr = sfr_matrix(labels, s.sigma, s.separate_entities)
        tokens, _ = self._last_block(x, trace.grid, rcs, sfr)
        aux["cls_embedding"] = tokens[:, 0]
        return tokens[:, 1:], self.add_stats(aux, trace)

    def _last_block(self, x: torch.Tensor, grid: Tuple[int, int], rcs: Optional[torch.Tensor],
                    sfr: Optional[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
        """ln_post(...) @ proj of every token after the rebuilt last block, and its attention (B, heads, T, T)."""
        tower, s = self.tower, self.settings
        last = tower.depth - 1
        q, k, v = tower.qkv(last, tower.ln_1(last, x))
        scale = tower.head_dim ** -0.5
        mix = (lambda logits: logits) if sfr is None else self._sfr_mix(sfr)
        if s.base is ResCLIPBase.naclip:
            omega = gaussian_neighbourhood(grid, s.sigma, k)
            attention = torch.softmax(mix(k @ k.transpose(-2, -1) * scale) + omega, dim=-1)
        elif s.base is ResCLIPBase.clearclip:
            attention = torch.softmax(mix(q @ q.transpose(-2, -1) * scale), dim=-1)
        else:
            attention = (torch.softmax(mix(q @ q.transpose(-2, -1) * scale), dim=-1)
                         + torch.softmax(mix(k @ k.transpose(-2, -1) * scale), dim=-1))
        if rcs is not None:
            tau, lam = self.settings.value("rcs_tau"), self.settings.value("rcs_lambda")
            attention = tau * ((1 - lam) * attention + lam * rcs)
        out = tower.out_proj(last, attention @ v)
        if s.base is ResCLIPBase.sclip:
            out = tower.residual_mlp(last, x, out)
        return tower.project(out), attention

    def _sfr_mix(self, sfr: torch.Tensor):
        """logits -> tau * ((1 - lambda) * logits + lambda * S / max S), S per image (B, 1, T, T)."""
        tau, lam = self.settings.value("sfr_tau"), self.settings.value("sfr_lambda")
        normalised = sfr / sfr.amax(dim=(-2, -1), keepdim=True)
        if self.settings.release_fp16:  # the release casts S to float16 and multiplies lambda in float16
            bias = (lam * normalised.half()).to(sfr.dtype)
        else:
            bias = lam * normalised
        return lambda logits: tau * ((1 - lam) * logits + bias)

    def _patch_labels(self, patches: torch.Tensor, images: torch.Tensor, grid: Tuple[int, int]) -> torch.Tensor:
        """(B, g_h, g_w) query index per patch from the first pass (SFR's feedback)."""
        s = self.settings
        text = self.queries.embeddings.to(patches.dtype)
        logits = F.normalize(patches, dim=-1) @ text.T  # (B, N, Q) cosines
        b, (gh, gw) = patches.shape[0], grid
        logits = logits.transpose(1, 2).reshape(b, -1, gh, gw)
        logits = F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=False)
        if s.sfr_pamr_steps:
            logits = pamr(images, logits, s.sfr_pamr_steps, s.sfr_pamr_dilations)
        probs = torch.softmax(logits * s.sfr_logit_scale, dim=1)
        confidence, labels = probs.max(dim=1)
        labels = torch.where(confidence < self.settings.value("temp_thd"), torch.zeros_like(labels), labels)
        ph, pw = self.tower.patch_size
        labels = labels[:, :gh * ph, :gw * pw].reshape(b, gh, ph, gw, pw).permute(0, 1, 3, 2, 4)
        return torch.mode(labels.reshape(b, gh, gw, ph * pw), dim=-1).values


def sfr_matrix(labels: torch.Tensor, sigma: float, separate_entities: bool) -> torch.Tensor:
    """(B, g_h, g_w) patch labels -> (B, 1, 1+N, 1+N) SFR matrix (zero CLS row and column): 1 for patch pairs of
    one label (decayed by exp(-steps / max steps) where the release's path check fails), blurred along each
    row's flattened patch index with a 1-D Gaussian, rows normalised."""
    b, gh, gw = labels.shape
    n = gh * gw
    flat = labels.reshape(b, n)
    same = (flat[:, :, None] == flat[:, None, :]).to(torch.float32)
    if separate_entities and n > 1:
        valid, steps, max_steps = _straight_paths(labels)
        same = torch.where(valid, same, same * torch.exp(-steps / max_steps))
    size = min(n, int(6 * sigma + 1))
    size = size if size % 2 == 1 else size + 1
    x = torch.arange(size, device=labels.device, dtype=torch.float32) - size // 2
    kernel = torch.exp(-(x ** 2) / (2 * sigma ** 2))
    kernel = (kernel / kernel.sum()).view(1, 1, -1)
    blurred = F.relu(F.conv1d(same.reshape(b * n, 1, n), kernel, padding=size // 2)).reshape(b, n, n)
    blurred = blurred / (blurred.sum(dim=-1, keepdim=True) + 1e-8)
    out = torch.zeros(b, 1, n + 1, n + 1, device=labels.device, dtype=torch.float32)
    out[:, 0, 1:, 1:] = blurred
    return out


def _straight_paths(labels: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, float]:
    """Per pair (i, j): whether the release's path check passes, the Chebyshev distance, its maximum.

    The release samples max_steps + 1 evenly spaced points of the segment i -> j (rounded half to even) and
    checks only the first `steps(i, j) + 1` of them against i's label: a prefix of the segment, kept as is."""
    b, gh, gw = labels.shape
    n = gh * gw
    device = labels.device
    index = torch.arange(n, device=device)
    coords = torch.stack([index // gw, index % gw], dim=-1)  # (n, 2)
    start = coords[:, None, :].expand(n, n, 2)
    end = coords[None, :, :].expand(n, n, 2)
    steps = (end - start).abs().amax(dim=-1)  # (n, n)
    max_steps = int(steps.max())
    t = torch.linspace(0, 1, max_steps + 1, device=device).view(1, 1, -1, 1)
    points = (start[:, :, None, :] * (1 - t) + end[:, :, None, :] * t).round().long()  # (n, n, S+1, 2)
    checked = torch.arange(max_steps + 1, device=device).view(1, 1, -1) <= steps[:, :, None]
    flat = labels.reshape(b, n)
    along = flat[:, points[..., 0] * gw + points[..., 1]]  # (b, n, n, S+1)
    valid = ((along == flat[:, :, None, None]) | ~checked).all(dim=-1)
    return valid, steps.to(torch.float32), float(max_steps)
