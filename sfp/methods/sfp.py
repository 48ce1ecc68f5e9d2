"""SFP (and SC-CLIP, its configuration sibling): blocks 0..L-2 run normally; the last block is rebuilt from its
ln_1 / in_proj / out_proj into two branches over the patch tokens (sfp-method.md, tensor by tensor).

Every switch and number comes from the config: `mitigator`, `enhancer`, `integrator`, `aggregation`,
`method.res_cls` and `backbone.layers`. All steps are per image, so any batch size gives the same features.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import torch

from ..config.schema import Detector, EnhancerMix, EnhancerSimilarity, IntegratorSource
from ..config.validate import resolve_layer_indices
from ..errors import ConfigError
from .base import COMPONENTS, DenseMethod, register_method
from .outliers import OutlierSets, detect_l2, detect_lof, detect_som, neighbour_fill
from .similarity import aggregate, cosine, enhancer_attention, threshold


def _value(option) -> str:
    return getattr(option, "value", option)


@register_method("sfp")
class SFPDense(DenseMethod):
    uses_components = frozenset(COMPONENTS)

    def __init__(self, tower, cfg):
        super().__init__(tower, cfg)
        depth = tower.depth
        layers = resolve_layer_indices(cfg, depth)
        self.detect, self.ref, self.aux = layers["detect"], layers["ref"], layers["aux"]
        integrate = list(cfg.integrator.layers) if cfg.integrator.layers is not None else list(layers["integrate"])
        if cfg.integrator.extend:
            end = max(integrate) + 1
            integrate += list(range(end, end + int(cfg.integrator.extend)))
        bad = [j for j in integrate if not 0 <= j <= depth - 2]
        if bad or not integrate:
            raise ConfigError(
                f"config error: the integrator's blocks {integrate} (backbone.layers.integrate / integrator.layers "
                f"/ integrator.extend) must be a non-empty list of block indices in [0, {depth - 2}]")
        self.integrate = integrate
        early = [j for j in cfg.mitigator.layers if j >= self.detect]
        if early:
            raise ConfigError(f"config error: mitigator.layers={list(cfg.mitigator.layers)} must all be below the "
                              f"detection block backbone.layers.detect={self.detect}")

    # ---- outliers -------------------------------------------------------------------------------------------
    def _detect(self, tokens: torch.Tensor, attention: Optional[torch.Tensor]) -> OutlierSets:
        mit = self.cfg.mitigator
        detector = _value(mit.detector)
        if detector == Detector.som.value:
            return detect_som(attention, int(mit.top_k), float(mit.cls_scale))
        if detector == Detector.l2.value:
            return detect_l2(tokens[:, 1:], int(mit.top_k))
        return detect_lof(tokens[:, 1:], int(mit.lof_neighbours), float(mit.lof_contamination))

    def _fill(self, patches: torch.Tensor, grid, outliers: OutlierSets) -> Tuple[torch.Tensor, torch.Tensor]:
        keep = _value(self.cfg.mitigator.no_neighbour) == "keep"
        return neighbour_fill(patches, grid, outliers, keep_without_neighbour=keep)

    def _attention_layers(self) -> set:
        cfg = self.cfg
        layers = set(self.stats_layers())
        if cfg.mitigator.enabled and _value(cfg.mitigator.detector) == Detector.som.value:
            layers |= {self.detect, *cfg.mitigator.layers}
        if cfg.integrator.enabled and _value(cfg.integrator.source) == IntegratorSource.attention_maps.value:
            layers |= set(self.integrate)
        return layers

    # ---- the rebuilt last block -----------------------------------------------------------------------------
    def _branch(self, patches: torch.Tensor, weights) -> torch.Tensor:
        """out_proj(heads(W v)) of the last block for patch tokens; `weights(q, k)` gives W per head."""
        tower, last = self.tower, self.tower.depth - 1
        q, k, v = tower.qkv(last, tower.ln_1(last, patches))
        return tower.out_proj(last, weights(q, k) @ v)

    def forward_features(self, images: torch.Tensor):
        cfg, tower = self.cfg, self.tower
        mitigating = bool(cfg.mitigator.enabled)
        grid = self.grid_for(images.shape[-2], images.shape[-1])

        def fill_mid_forward(j, tokens, attention):
            # The paper's "mitigate at each layer" variant: filled tokens feed the following blocks.
            if j not in cfg.mitigator.layers:
                return tokens
            filled, _ = self._fill(tokens[:, 1:], grid, self._detect(tokens, attention))
            return torch.cat([tokens[:, :1], filled], dim=1)

        trace = tower.run(images, num_blocks=tower.depth - 1, attention_layers=self._attention_layers(),
                          after_block=fill_mid_forward if mitigating and cfg.mitigator.layers else None)
        h = trace.tokens
        h_detect = h[self.detect]
        outliers = self._detect(h_detect, trace.attention.get(self.detect)) if mitigating else \
            OutlierSets.empty(images.shape[0], images.device)
        detect_patches, without_neighbour = self._fill(h_detect[:, 1:], grid, outliers)

        enhancer, aggregation = cfg.enhancer, cfg.aggregation
        beta = float(aggregation.beta)
        s_pre = m = s_post = None
        if enhancer.enabled or aggregation.enabled:
            ref_patches, _ = self._fill(h[self.ref][:, 1:], grid, outliers)
            s_raw = cosine(ref_patches)
            s_pre = threshold(s_raw, beta)
            if enhancer.enabled:
                source = s_raw if _value(enhancer.similarity) == EnhancerSimilarity.raw.value else s_pre
                m = enhancer_attention(source, float(enhancer.temperature)).unsqueeze(1)  # shared by heads
        if aggregation.enabled:
            s_post = threshold(cosine(h[self.aux][:, 1:]), beta)

        self_self = lambda q, k: (tower.self_attention(q, q) + tower.self_attention(k, k)) / 2  # noqa: E731
        sc_mix = enhancer.enabled and _value(enhancer.mix) == EnhancerMix.sc_clip.value
        if not enhancer.enabled:
            weights_a = self_self
        elif sc_mix:
            weights_a = lambda q, k: (m + tower.self_attention(k, k)) / 2  # noqa: E731
        else:
            weights_a = lambda q, k: (tower.self_attention(q, q) + tower.self_attention(k, k) + m) / 3  # noqa: E731

        res_cls = float(cfg.method.res_cls)
        branch_input = aggregate(s_pre, detect_patches) if aggregation.enabled else detect_patches
        out = self._branch(branch_input, weights_a) + res_cls * h_detect[:, :1]
        if aggregation.enabled:
            out = aggregate(s_post, out)

        if cfg.integrator.enabled:
            integrated = torch.stack([h[j] for j in self.integrate]).sum(dim=0)
            m_b = m
            if _value(cfg.integrator.source) == IntegratorSource.attention_maps.value:
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
