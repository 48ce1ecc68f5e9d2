"""SFP (and SC-CLIP, its configuration sibling): blocks 0..L-2 run normally; the last block is rebuilt from its
ln_1 / in_proj / out_proj into two branches over the patch tokens (docs/methods.md, the SFP sections).

Built from its own typed settings: `method.res_cls`, the component groups `mitigator`, `enhancer`,
`integrator`, `aggregation`, and the backbone's block indices `backbone.layers` (defaults per depth below).
All steps are per image, so any batch size gives the same features.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Tuple

import torch

from ..config.checks import block_indices, non_negative
from ..config.schema import (
    AggregationConfig, Detector, EnhancerConfig, EnhancerMix, EnhancerSimilarity, IntegratorConfig,
    IntegratorSource, LayerIndices, MethodSettings, MitigatorConfig, NoNeighbour, StatsConfig,
)
from ..errors import ConfigError
from ..models.vit import BlockTrace, TrunkPlan
from .base import DenseMethod, register_method
from .outliers import OutlierSets, detect_l2, detect_lof, detect_som, neighbour_fill
from .similarity import aggregate, cosine, enhancer_attention, threshold

# Block indices of SFP by depth (docs/methods.md, "Block indices per depth"): ViT-B/16 and ViT-L/14.
DEFAULT_LAYERS: Dict[int, LayerIndices] = {
    12: LayerIndices(detect=10, ref=8, aux=3, integrate=list(range(3, 10))),
    24: LayerIndices(detect=22, ref=16, aux=6, integrate=list(range(8, 20))),
}


@dataclass
class SFPSettings(MethodSettings):
    res_cls: float = 0.3  # weight of the CLS residual added to every patch row of both branches

    def validate(self, prefix: str = "method") -> None:
        non_negative(f"{prefix}.res_cls", self.res_cls)


def resolve_layers(layers: LayerIndices, depth: int) -> LayerIndices:
    """The configured indices, with the defaults of the backbone's depth filling the gaps; range-checked."""
    for name in ("detect", "ref", "aux"):
        if getattr(layers, name) is not None:
            block_indices(f"backbone.layers.{name}", [getattr(layers, name)], depth)
    if layers.integrate is not None:
        block_indices("backbone.layers.integrate", layers.integrate, depth)
    missing = [name for name in ("detect", "ref", "aux", "integrate") if getattr(layers, name) is None]
    defaults = DEFAULT_LAYERS.get(depth)
    if missing and defaults is None:
        raise ConfigError(
            f"config error: backbone.layers.{missing[0]} is not set and a {depth}-block backbone has no default "
            f"indices (defaults exist for {' and '.join(map(str, DEFAULT_LAYERS))} blocks): set "
            "backbone.layers.detect/ref/aux/integrate")
    return LayerIndices(**{name: getattr(defaults, name) if name in missing else getattr(layers, name)
                           for name in ("detect", "ref", "aux", "integrate")})


@register_method("sfp")
class SFPDense(DenseMethod):
    Settings = SFPSettings
    components = ("mitigator", "enhancer", "integrator", "aggregation", "layers")

    def __init__(self, tower, settings: SFPSettings, stats: StatsConfig, *, mitigator: MitigatorConfig,
                 enhancer: EnhancerConfig, integrator: IntegratorConfig, aggregation: AggregationConfig,
                 layers: LayerIndices):
        super().__init__(tower, settings, stats)
        self.mitigator, self.enhancer, self.integrator, self.aggregation = mitigator, enhancer, integrator, aggregation
        depth = tower.depth
        resolved = resolve_layers(layers, depth)
        block_indices("mitigator.layers", mitigator.layers, depth)
        self.detect, self.ref, self.aux = resolved.detect, resolved.ref, resolved.aux
        integrate: List[int] = list(integrator.layers) if integrator.layers is not None else list(resolved.integrate)
        if integrator.extend:
            end = max(integrate) + 1
            integrate += list(range(end, end + integrator.extend))
        bad = [j for j in integrate if not 0 <= j <= depth - 2]
        if bad or not integrate:
            raise ConfigError(
                f"config error: the integrator's blocks {integrate} (backbone.layers.integrate / integrator.layers "
                f"/ integrator.extend) must be a non-empty list of block indices in [0, {depth - 2}]")
        self.integrate = integrate
        early = [j for j in mitigator.layers if j >= self.detect]
        if early:
            raise ConfigError(f"config error: mitigator.layers={list(mitigator.layers)} must all be below the "
                              f"detection block backbone.layers.detect={self.detect}")

    # ---- outliers -------------------------------------------------------------------------------------------
    def _detect(self, tokens: torch.Tensor, attention) -> OutlierSets:
        mit = self.mitigator
        if mit.detector == Detector.som:
            return detect_som(attention, mit.top_k, mit.cls_scale)
        if mit.detector == Detector.l2:
            return detect_l2(tokens[:, 1:], mit.top_k)
        return detect_lof(tokens[:, 1:], mit.lof_neighbours, mit.lof_contamination)

    def _fill(self, patches: torch.Tensor, grid, outliers: OutlierSets) -> Tuple[torch.Tensor, torch.Tensor]:
        keep = self.mitigator.no_neighbour == NoNeighbour.keep
        return neighbour_fill(patches, grid, outliers, keep_without_neighbour=keep)

    def _attention_layers(self) -> set:
        layers = set(self.stats_layers())
        if self.mitigator.enabled and self.mitigator.detector == Detector.som:
            layers |= {self.detect, *self.mitigator.layers}
        if self.integrator.enabled and self.integrator.source == IntegratorSource.attention_maps:
            layers |= set(self.integrate)
        return layers

    # ---- the rebuilt last block -----------------------------------------------------------------------------
    def _branch(self, patches: torch.Tensor, weights) -> torch.Tensor:
        """out_proj(heads(W v)) of the last block for patch tokens; `weights(q, k)` gives W per head."""
        tower, last = self.tower, self.tower.depth - 1
        q, k, v = tower.qkv(last, tower.ln_1(last, patches))
        return tower.out_proj(last, weights(q, k) @ v)

    def trunk_plan(self) -> TrunkPlan:
        mitigator = self.mitigator
        if not (mitigator.enabled and mitigator.layers):
            return TrunkPlan(self.tower.depth - 1, frozenset(self._attention_layers()))
        # The paper's "mitigate at each layer" variant: filled tokens feed the following blocks. Plans with
        # the same detector and fill settings apply the same edit.
        edit_key = ("neighbour_fill", mitigator.detector, mitigator.top_k, mitigator.cls_scale,
                    mitigator.no_neighbour, mitigator.lof_neighbours, mitigator.lof_contamination)
        return TrunkPlan(self.tower.depth - 1, frozenset(self._attention_layers()),
                         frozenset(mitigator.layers), self._fill_mid_forward, edit_key)

    def _fill_mid_forward(self, j: int, tokens: torch.Tensor, attention, grid) -> torch.Tensor:
        filled, _ = self._fill(tokens[:, 1:], grid, self._detect(tokens, attention))
        return torch.cat([tokens[:, :1], filled], dim=1)

    def features_from_trace(self, trace: BlockTrace):
        tower, mitigating = self.tower, self.mitigator.enabled
        grid = trace.grid
        batch, device = trace.tokens[0].shape[0], trace.tokens[0].device
        h = trace.tokens
        h_detect = h[self.detect]
        outliers = self._detect(h_detect, trace.attention.get(self.detect)) if mitigating else \
            OutlierSets.empty(batch, device)
        detect_patches, without_neighbour = self._fill(h_detect[:, 1:], grid, outliers)

        enhancer, aggregation = self.enhancer, self.aggregation
        beta = aggregation.beta
        s_pre = m = s_post = None
        if enhancer.enabled or aggregation.enabled:
            ref_patches, _ = self._fill(h[self.ref][:, 1:], grid, outliers)
            s_raw = cosine(ref_patches)
            s_pre = threshold(s_raw, beta)
            if enhancer.enabled:
                source = s_raw if enhancer.similarity == EnhancerSimilarity.raw else s_pre
                m = enhancer_attention(source, enhancer.temperature).unsqueeze(1)  # shared by heads
        if aggregation.enabled:
            s_post = threshold(cosine(h[self.aux][:, 1:]), beta)

        self_self = lambda q, k: (tower.self_attention(q, q) + tower.self_attention(k, k)) / 2  # noqa: E731
        sc_mix = enhancer.enabled and enhancer.mix == EnhancerMix.sc_clip
        if not enhancer.enabled:
            weights_a = self_self
        elif sc_mix:
            weights_a = lambda q, k: (m + tower.self_attention(k, k)) / 2  # noqa: E731
        else:
            weights_a = lambda q, k: (tower.self_attention(q, q) + tower.self_attention(k, k) + m) / 3  # noqa: E731

        res_cls = self.settings.res_cls
        branch_input = aggregate(s_pre, detect_patches) if aggregation.enabled else detect_patches
        out = self._branch(branch_input, weights_a) + res_cls * h_detect[:, :1]
        if aggregation.enabled:
            out = aggregate(s_post, out)

        if self.integrator.enabled:
            integrated = torch.stack([h[j] for j in self.integrate]).sum(dim=0)
            m_b = m
            if self.integrator.source == IntegratorSource.attention_maps:
                maps = torch.stack([trace.attention[j].mean(dim=1)[:, 1:, 1:] for j in self.integrate]).mean(dim=0)
                m_b = (maps / maps.sum(dim=-1, keepdim=True)).unsqueeze(1)
            if m_b is None:
                weights_b = self_self
            elif sc_mix:
                weights_b = lambda q, k: (m_b + tower.self_attention(k, k)) / 2  # noqa: E731
            else:
                weights_b = lambda q, k: m_b  # noqa: E731
            branch_b = self._branch(integrated[:, 1:], weights_b) + res_cls * integrated[:, :1]
            out = out + (aggregate(s_post, branch_b) if aggregation.enabled else branch_b)

        features = tower.project(out)
        aux: Dict[str, Any] = {
            "grid_size": grid,
            "outliers": outliers.per_image(),
            "outlier_sets": outliers,
            "no_neighbour": without_neighbour,
        }
        return features, self.add_stats(aux, trace)
