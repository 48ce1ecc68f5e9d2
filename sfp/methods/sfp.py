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
    def _branch(self, memo, input_key, patches: torch.Tensor, mix: str, m_key, m) -> torch.Tensor:
        """out_proj(heads(W v)) of the last block for patch tokens, W by `mix`: "self-self" (qq + kk) / 2,
        "sfp" (qq + kk + M) / 3, "sc_clip" (M + kk) / 2, "map" M."""
        tower, last = self.tower, self.tower.depth - 1
        qkv_key = ("qkv", input_key)
        q, k, v = memo(qkv_key, lambda: tower.qkv(last, tower.ln_1(last, patches)))

        def weights() -> torch.Tensor:
            if mix == "map":
                return m
            kk = memo(("kk", qkv_key), lambda: tower.self_attention(k, k))
            if mix == "sc_clip":
                return (m + kk) / 2
            qq = memo(("qq", qkv_key), lambda: tower.self_attention(q, q))
            return (qq + kk) / 2 if mix == "self-self" else (qq + kk + m) / 3

        return memo(("branch", qkv_key, mix, m_key), lambda: tower.out_proj(last, weights() @ v))

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
        """The rebuilt last block. Intermediate results are kept in `trace.memo` under keys naming everything
        they depend on (the trace's tensors by identity, the settings that shape them), so variants of one
        pass that share a step (e.g. the same mitigator, or the integrated tokens) compute it once."""
        tower, mitigator, enhancer, aggregation = self.tower, self.mitigator, self.enhancer, self.aggregation
        grid, h = trace.grid, trace.tokens
        batch, device = h[0].shape[0], h[0].device

        def memo(key, compute):
            key = ("sfp",) + key
            if key not in trace.memo:
                trace.memo[key] = compute()
            return trace.memo[key]

        h_detect = h[self.detect]
        if mitigator.enabled:
            attention = trace.attention.get(self.detect)
            found = ("outliers", id(h_detect), id(attention), mitigator.detector, mitigator.top_k,
                     mitigator.cls_scale, mitigator.lof_neighbours, mitigator.lof_contamination)
            outliers = memo(found, lambda: self._detect(h_detect, attention))
        else:
            found = ("no outliers",)
            outliers = memo(found, lambda: OutlierSets.empty(batch, device))

        def filled(j):  # (key, (patches of h_j with the outliers filled, count without a neighbour))
            key = ("fill", id(h[j]), found, mitigator.no_neighbour)
            return key, memo(key, lambda: self._fill(h[j][:, 1:], grid, outliers))

        detect_key, (detect_patches, without_neighbour) = filled(self.detect)
        beta = aggregation.beta
        s_pre = m = s_post = None
        pre_key = m_key = None
        if enhancer.enabled or aggregation.enabled:
            ref_key, (ref_patches, _) = filled(self.ref)
            raw_key = ("cosine", ref_key)
            s_raw = memo(raw_key, lambda: cosine(ref_patches))
            pre_key = ("threshold", raw_key, beta)
            s_pre = memo(pre_key, lambda: threshold(s_raw, beta))
            if enhancer.enabled:
                raw = enhancer.similarity == EnhancerSimilarity.raw
                source, source_key = (s_raw, raw_key) if raw else (s_pre, pre_key)
                m_key = ("enhancer", source_key, enhancer.temperature)
                m = memo(m_key, lambda: enhancer_attention(source, enhancer.temperature).unsqueeze(1))  # all heads
        if aggregation.enabled:
            s_post = memo(("threshold", ("cosine", id(h[self.aux])), beta),
                          lambda: threshold(cosine(h[self.aux][:, 1:]), beta))

        sc_mix = enhancer.enabled and enhancer.mix == EnhancerMix.sc_clip
        mix_a = "self-self" if not enhancer.enabled else ("sc_clip" if sc_mix else "sfp")
        res_cls = self.settings.res_cls
        if aggregation.enabled:
            input_key = ("aggregate", pre_key, detect_key)
            branch_input = memo(input_key, lambda: aggregate(s_pre, detect_patches))
        else:
            input_key, branch_input = detect_key, detect_patches
        out = self._branch(memo, input_key, branch_input, mix_a, m_key, m) + res_cls * h_detect[:, :1]
        if aggregation.enabled:
            out = aggregate(s_post, out)

        if self.integrator.enabled:
            integrated_key = ("integrated", tuple(id(h[j]) for j in self.integrate))
            integrated = memo(integrated_key, lambda: torch.stack([h[j] for j in self.integrate]).sum(dim=0))
            m_b, m_b_key = m, m_key
            if self.integrator.source == IntegratorSource.attention_maps:
                m_b_key = ("attention maps", tuple(id(trace.attention[j]) for j in self.integrate))

                def attention_maps():
                    maps = torch.stack([trace.attention[j].mean(dim=1)[:, 1:, 1:] for j in self.integrate]).mean(0)
                    return (maps / maps.sum(dim=-1, keepdim=True)).unsqueeze(1)

                m_b = memo(m_b_key, attention_maps)
            mix_b = "self-self" if m_b is None else ("sc_clip" if sc_mix else "map")
            branch_b = self._branch(memo, ("patches", integrated_key), integrated[:, 1:], mix_b, m_b_key, m_b) \
                + res_cls * integrated[:, :1]
            out = out + (aggregate(s_post, branch_b) if aggregation.enabled else branch_b)

        features = tower.project(out)
        aux: Dict[str, Any] = {
            "grid_size": grid,
            "outliers": outliers.per_image(),
            "outlier_sets": outliers,
            "no_neighbour": without_neighbour,
        }
        return features, self.add_stats(aux, trace)
