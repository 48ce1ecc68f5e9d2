"""The interface every dense method implements, and the registry that names them."""
from __future__ import annotations

import copy
import dataclasses
from abc import ABC, abstractmethod
from typing import Any, ClassVar, Dict, Optional, Tuple, Type, Union

import torch
from torch import nn

from ..config.schema import MethodSettings, StatsConfig
from ..errors import ConfigError
from ..models.text import QueryEmbeddings
from ..models.registers import TestTimeRegisters
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
    component groups `mitigator`, `enhancer`, `integrator`, `aggregation`, `layers`, the backbone's block
    indices, and `vfm`, the loaded vision foundation model or None). Every method receives the per-layer
    statistics settings.
    """

    Settings: ClassVar[Type[MethodSettings]] = MethodSettings
    components: ClassVar[Tuple[str, ...]] = ()
    # The features depend on the class text (e.g. a first-pass segmentation): `bind_queries` first.
    uses_queries: ClassVar[bool] = False
    # "features": (B, N, D) features the engine compares with the queries (cosine, times the logit scale);
    # "scores": (B, N, Q) per-query scores in [0, inf) that the engine averages and thresholds as they are.
    output: ClassVar[str] = "features"

    def __init__(self, tower: VisionTower, settings: MethodSettings, stats: StatsConfig):
        super().__init__()
        self.tower = tower
        self.settings = settings
        self.stats = stats
        self._queries: Optional[QueryEmbeddings] = None
        self.background = False  # class 0 of the bound queries is the background class
        self.registers: Optional[TestTimeRegisters] = None  # test-time registers in the trunk (`registers=on`)

    def for_dataset(self, values: Dict[str, Any]) -> "DenseMethod":
        """This method with its per-dataset knobs (`Settings.dataset_fields`) set to `values` (the dataset's
        protocol), sharing the backbone; itself when there is nothing to set."""
        if not values or all(getattr(self.settings, k) == v for k, v in values.items()):
            return self
        clone = copy.copy(self)
        clone.settings = dataclasses.replace(self.settings, **values)
        return clone

    def bind_queries(self, queries: Optional[QueryEmbeddings], background: bool = False) -> None:
        """The class text (query embeddings and their classes) that a text-using method reads; `background`:
        class 0 is the dataset's background class."""
        self._queries = queries
        self.background = background

    @property
    def queries(self) -> QueryEmbeddings:
        if self._queries is None:
            raise ConfigError(f"method {self.settings.name!r} uses the class text: pass queries= to dense_features "
                              "(query embeddings (Q, D) or a QueryEmbeddings), or segment through a Segmenter")
        return self._queries

    @abstractmethod
    def trunk_plan(self) -> TrunkPlan:
        """The blocks, attention probabilities and mid-forward edits this method reads from the backbone."""

    @abstractmethod
    def features_from_trace(self, trace: BlockTrace) -> Tuple[torch.Tensor, Dict[str, Any]]:
        """(features (B, N, D), aux) from the trace of `trunk_plan()`; must not modify the trace's tensors."""

    def plan(self) -> TrunkPlan:
        """`trunk_plan()` with the run's test-time registers, if any (they compose with every method)."""
        plan = self.trunk_plan()
        return plan if self.registers is None else dataclasses.replace(plan, registers=self.registers)

    def forward_features(self, images: torch.Tensor) -> Tuple[torch.Tensor, Dict[str, Any]]:
        """(features (B, N, D), aux) for normalised crops (B, 3, H, W)."""
        return self.features_from_trace(self.tower.run_plans(images, [self.plan()])[0])

    def dense_features(
        self, images: torch.Tensor, return_aux: bool = False,
        queries: Optional[Union[torch.Tensor, QueryEmbeddings]] = None, background: bool = False,
    ) -> Union[torch.Tensor, Tuple[torch.Tensor, Dict[str, Any]]]:
        """Features (B, N, D), or per-query scores (B, N, Q) for a method whose `output` is "scores".
        `queries` binds the class text of a text-using method: embeddings (Q, D) (each its own class) or a
        QueryEmbeddings; `background`: their class 0 is a background class."""
        if queries is not None:
            self.bind_queries(as_query_embeddings(queries), background)
        features, aux = self.forward_features(images)
        return (features, aux) if return_aux else features

    @property
    def output_patch_size(self) -> Tuple[int, int]:
        """Pixels per output token: the backbone's patch, or e.g. a VFM's for a method that outputs on its grid."""
        return self.tower.patch_size

    def grid_for(self, height: int, width: int) -> Tuple[int, int]:
        ph, pw = self.output_patch_size
        return height // ph, width // pw

    # ---- per-layer outlier statistics, shared by every method -----------------------------------------
    def stats_layers(self) -> range:
        """Blocks whose attention the statistics need (all but the last), or none."""
        return range(self.tower.depth - 1) if self.stats.enabled else range(0)

    def add_stats(self, aux: Dict[str, Any], trace: BlockTrace) -> Dict[str, Any]:
        """The per-layer statistics (when enabled) and the trunk's register neurons (with registers) in aux."""
        if self.registers is not None:
            aux["register_neurons"] = self.registers.neurons.neurons
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


def as_query_embeddings(queries: Union[torch.Tensor, QueryEmbeddings]) -> QueryEmbeddings:
    if isinstance(queries, QueryEmbeddings):
        return queries
    if not isinstance(queries, torch.Tensor) or queries.dim() != 2:
        raise ConfigError(f"queries: expected query embeddings (Q, D) or a QueryEmbeddings, got "
                          f"{getattr(queries, 'shape', type(queries).__name__)}")
    count = queries.shape[0]
    return QueryEmbeddings(queries, torch.arange(count, device=queries.device), count)
