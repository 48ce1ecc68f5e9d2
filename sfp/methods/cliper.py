"""CLIPer, its CLIP-only path (docs/methods.md, "CLIPer"): early-layer fusion.

Attention fusion: the per-head attention probabilities of blocks 0..L-2 are summed, balanced (columns then rows
normalised, cumulatively once more for each row below, as the release does in place), made symmetric, centred,
clipped and row-normalised; the last block uses them in place of its own attention (values only, no residual,
no MLP). Embedding fusion: every block's input (after that block's ln_1; the last block's raw input) goes
through that last block, each row is classified against the class text (softmax over the queries and a
"mean foreground" distractor), and the rows' probabilities are averaged; the probabilities of one row
(`select_layer`), thresholded and propagated by the fused attention, are added.

The method produces per-query scores, not features. The release's diffusion refinement is out of scope.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Dict, Optional, Tuple

import torch
import torch.nn.functional as F

from ..config.checks import check, in_range, positive
from ..config.schema import MethodSettings, StatsConfig
from ..models.vit import BlockTrace, TrunkPlan
from .base import DenseMethod, register_method


@dataclass
class CLIPerSettings(MethodSettings):
    fuse_embeddings: bool = True  # average the probabilities of every row (the release's --fuse-feature)
    select_layer: Optional[int] = None  # the propagated row, counted from the end (-1: the last block's input)
    attention_thr: Optional[float] = None  # the propagated row's scores below this fraction of its max -> 0
    logit_scale: Optional[float] = None  # softmax temperature of the rows' classification
    release_pos_embedding: bool = True  # positional embedding resized bilinearly and rounded to float16

    dataset_fields: ClassVar[Tuple[str, ...]] = ("select_layer", "attention_thr", "logit_scale")
    # the ViT-B/16 VOC21 values: for datasets the release did not tune
    fallbacks: ClassVar[Dict[str, Any]] = {"select_layer": -1, "attention_thr": 0.1, "logit_scale": 100.0}

    def validate(self, prefix: str = "method") -> None:
        if self.select_layer is not None:
            check(self.select_layer <= -1, f"{prefix}.select_layer", self.select_layer,
                  "a negative row index (-1: the last block's input, -2: the block before it, ...)")
        if self.attention_thr is not None:
            in_range(f"{prefix}.attention_thr", self.attention_thr, 0, 1)
        if self.logit_scale is not None:
            positive(f"{prefix}.logit_scale", self.logit_scale)


@register_method("cliper")
class CLIPerDense(DenseMethod):
    Settings = CLIPerSettings
    uses_queries = True
    output = "scores"

    def __init__(self, tower, settings: CLIPerSettings, stats: StatsConfig):
        super().__init__(tower, settings, stats)
        self._check_select(settings)

    def _check_select(self, settings: CLIPerSettings) -> None:
        select = settings.value("select_layer")
        check(-self.tower.depth <= select <= -1, "method.select_layer", select,
              f"a row index in [-{self.tower.depth}, -1] for this {self.tower.depth}-block backbone")

    def for_dataset(self, values):
        clone = super().for_dataset(values)
        self._check_select(clone.settings)
        return clone

    def trunk_plan(self) -> TrunkPlan:
        early = frozenset(range(self.tower.depth - 1))
        if self.settings.release_pos_embedding:
            return TrunkPlan(self.tower.depth - 1, early, embed=self._embed, embed_key="pos:bilinear_fp16")
        return TrunkPlan(self.tower.depth - 1, early)

    def _embed(self, images, extra_tokens=0):
        return self.tower.embed(images, "bilinear_fp16", extra_tokens)

    def features_from_trace(self, trace: BlockTrace):
        tower, s = self.tower, self.settings
        depth, last = tower.depth, tower.depth - 1
        select = depth + self.settings.value("select_layer")
        rows = range(depth) if s.fuse_embeddings else [select]
        inputs = [trace.embedded] + trace.tokens[:-1]  # the input of block i
        fused = fused_attention_per_row(sum(trace.attention[j] for j in range(last)), depth)
        text = self._text(trace.tokens[-1].dtype)
        scale = self.settings.value("logit_scale")
        probs: Dict[int, torch.Tensor] = {}
        row_features = []
        for r in rows:
            row = tower.ln_1(r, inputs[r]) if r < last else trace.tokens[-1]
            _, _, v = tower.qkv(last, tower.ln_1(last, row))
            features = tower.project(tower.out_proj(last, fused[r] @ v))  # (B, 1+N, E)
            row_features.append(features)
            logits = scale * F.normalize(features[:, 1:], dim=-1) @ text.T  # (B, N, Q + 1)
            probs[r] = torch.softmax(logits, dim=-1)[..., :-1]
        selected = probs[select]
        selected = torch.where(selected < selected.amax(dim=1, keepdim=True) * self.settings.value("attention_thr"),
                               torch.zeros_like(selected), selected)
        probs[select] = selected  # the release thresholds in place: the average below sees it too
        propagation = fused[depth - 1].mean(dim=1)[:, 1:, 1:]  # (B, N, N), heads averaged
        scores = propagation.transpose(1, 2) @ selected  # out[j] = sum_i s[i] P[i, j]
        if s.fuse_embeddings:
            scores = scores + torch.stack([probs[r] for r in rows]).mean(dim=0)
        aux = {"grid_size": trace.grid, "row_features": torch.stack(row_features, dim=1)}
        return scores, self.add_stats(aux, trace)

    def _text(self, dtype: torch.dtype) -> torch.Tensor:
        """The queries and, last, the mean of the foreground queries (the release's distractor)."""
        queries = self.queries
        embeddings = queries.embeddings.to(dtype)
        foreground = embeddings[queries.query_to_class != 0] if self.background else embeddings
        distractor = foreground.mean(dim=0, keepdim=True)
        return F.normalize(torch.cat([embeddings, distractor]), dim=-1)


def fused_attention_per_row(summed: torch.Tensor, rows: int) -> list:
    """The fused attention each of `rows` rows uses (B, heads, T, T): row r sees the summed attention after
    r + 1 column-then-row normalisations (the release normalises in place, once per row), then symmetrised,
    centred over the query axis, clipped at 0 and row-normalised."""
    balanced = summed
    fused = []
    for _ in range(rows):
        balanced = balanced / balanced.sum(dim=-2, keepdim=True)
        balanced = balanced / balanced.sum(dim=-1, keepdim=True)
        m = (balanced + balanced.transpose(-2, -1)) / 2
        m = (m - m.mean(dim=-2, keepdim=True)).clamp(min=0)
        fused.append(m / m.sum(dim=-1, keepdim=True))
    return fused
