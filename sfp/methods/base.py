"""The interface every dense method implements, and the registry that names them."""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, Dict, FrozenSet, Tuple, Union

import torch
from torch import nn

from ..models.vit import BlockTrace, VisionTower
from ..registry import Registry
from .stats import layer_statistics

METHODS: Registry[type] = Registry("method")
register_method = METHODS.register

# The SFP components a method may read; a method that ignores a switched-on component says so in the log.
COMPONENTS = ("mitigator", "enhancer", "integrator", "aggregation")


class DenseMethod(nn.Module, ABC):
    """Turns normalised crops (B, 3, H, W) into per-patch features (B, N, D) before L2 normalisation.

    Subclasses implement `forward_features`; `cfg` is the full run config (attribute access), so a method
    reads whatever component settings it needs and nothing is hidden in code.
    """

    uses_components: ClassVar[FrozenSet[str]] = frozenset()

    def __init__(self, tower: VisionTower, cfg: Any):
        super().__init__()
        self.tower = tower
        self.cfg = cfg

    @abstractmethod
    def forward_features(self, images: torch.Tensor) -> Tuple[torch.Tensor, Dict[str, Any]]:
        """(features (B, N, D), aux) for normalised crops (B, 3, H, W)."""

    def dense_features(
        self, images: torch.Tensor, return_aux: bool = False
    ) -> Union[torch.Tensor, Tuple[torch.Tensor, Dict[str, Any]]]:
        features, aux = self.forward_features(images)
        return (features, aux) if return_aux else features

    def grid_for(self, height: int, width: int) -> Tuple[int, int]:
        ph, pw = self.tower.patch_size
        return height // ph, width // pw

    # ---- per-layer outlier statistics, shared by every method -----------------------------------------
    @property
    def collect_stats(self) -> bool:
        return bool(self.cfg.stats.enabled)

    def stats_layers(self) -> range:
        """Blocks whose attention the statistics need (all but the last), or none."""
        return range(self.tower.depth - 1) if self.collect_stats else range(0)

    def add_stats(self, aux: Dict[str, Any], trace: BlockTrace) -> Dict[str, Any]:
        if self.collect_stats:
            aux["layer_stats"] = layer_statistics(
                trace.tokens[: self.tower.depth - 1], trace.attention,
                float(self.cfg.mitigator.cls_scale), int(self.cfg.mitigator.top_k))
        return aux
