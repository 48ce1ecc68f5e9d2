"""The interface every dense method implements, and the registry that names them."""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, Dict, Tuple, Type, Union

import torch
from torch import nn

from ..config.schema import MethodSettings, StatsConfig
from ..models.vit import BlockTrace, TrunkPlan, VisionTower
from ..registry import Registry
from .stats import layer_statistics

METHODS: Registry[type] = Registry("method")
register_method = METHODS.register


class DenseMethod(nn.Module, ABC):
    """Turns normalised crops (B, 3, H, W) into per-patch features (B, N, D) before L2 normalisation.

    A method is two parts: `trunk_plan` says what it needs from the backbone (how many blocks, whose attention,
    any mid-forward edit) and `features_from_trace` computes its features from the resulting `BlockTrace`.
    Methods evaluated together share the trunk (`VisionTower.run_plans`); alone, `forward_features` runs it.

    A method is built from its own typed settings: `Settings` types the `method` config node (its knobs),
    `components` names the run-config parts it also receives as keyword arguments of the same name (the
    component groups `mitigator`, `enhancer`, `integrator`, `aggregation`, and `layers`, the backbone's block
    indices). Every method receives the per-layer statistics settings.
    """

    Settings: ClassVar[Type[MethodSettings]] = MethodSettings
    components: ClassVar[Tuple[str, ...]] = ()

    def __init__(self, tower: VisionTower, settings: MethodSettings, stats: StatsConfig):
        super().__init__()
        self.tower = tower
        self.settings = settings
        self.stats = stats

    @abstractmethod
    def trunk_plan(self) -> TrunkPlan:
        """The blocks, attention probabilities and mid-forward edits this method reads from the backbone."""

    @abstractmethod
    def features_from_trace(self, trace: BlockTrace) -> Tuple[torch.Tensor, Dict[str, Any]]:
        """(features (B, N, D), aux) from the trace of `trunk_plan()`; must not modify the trace's tensors."""

    def forward_features(self, images: torch.Tensor) -> Tuple[torch.Tensor, Dict[str, Any]]:
        """(features (B, N, D), aux) for normalised crops (B, 3, H, W)."""
        return self.features_from_trace(self.tower.run_plans(images, [self.trunk_plan()])[0])

    def dense_features(
        self, images: torch.Tensor, return_aux: bool = False
    ) -> Union[torch.Tensor, Tuple[torch.Tensor, Dict[str, Any]]]:
        features, aux = self.forward_features(images)
        return (features, aux) if return_aux else features

    def grid_for(self, height: int, width: int) -> Tuple[int, int]:
        ph, pw = self.tower.patch_size
        return height // ph, width // pw

    # ---- per-layer outlier statistics, shared by every method -----------------------------------------
    def stats_layers(self) -> range:
        """Blocks whose attention the statistics need (all but the last), or none."""
        return range(self.tower.depth - 1) if self.stats.enabled else range(0)

    def add_stats(self, aux: Dict[str, Any], trace: BlockTrace) -> Dict[str, Any]:
        if self.stats.enabled:
            layers = range(self.tower.depth - 1)
            # Variants whose traces share these blocks share the statistics (the tensors' identities say so).
            key = ("layer_stats", tuple(id(trace.tokens[j]) for j in layers),
                   tuple(id(trace.attention[j]) for j in layers), self.stats.cls_scale, self.stats.top_k)
            if key not in trace.memo:
                trace.memo[key] = layer_statistics(
                    trace.tokens[: self.tower.depth - 1], trace.attention, self.stats.cls_scale, self.stats.top_k)
            aux["layer_stats"] = trace.memo[key]
        return aux
