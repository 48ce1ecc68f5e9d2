"""Per-layer outlier statistics (docs/methods.md, 'Outlier statistics'): per crop in `layer_statistics`, per dataset
in `LayerStatsAccumulator`. These measure the "outlier propagation" the SFP paper is about."""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import torch

from .outliers import OutlierSets, som_scores

STAT_NAMES = ("candidates", "candidates_unscaled", "outliers", "norm_ratio", "cls_entropy", "jaccard")


def layer_statistics(tokens: List[torch.Tensor], attention: Dict[int, torch.Tensor], cls_scale: float,
                     top_k: int) -> Dict[str, torch.Tensor]:
    """Per crop and layer l = 0 .. len(tokens)-1: (B, layers) tensors (jaccard is NaN at l = 0 and when
    both candidate sets are empty). Layer l uses block l's attention and its output tokens h_l."""
    columns: Dict[str, List[torch.Tensor]] = {name: [] for name in STAT_NAMES}
    previous: Optional[torch.Tensor] = None
    for layer, h in enumerate(tokens):
        probs = attention[layer]
        c, s = som_scores(probs, cls_scale)
        candidates = c > s
        columns["candidates"].append(candidates.sum(dim=1).float())
        columns["candidates_unscaled"].append((c / cls_scale > s).sum(dim=1).float())
        columns["outliers"].append(candidates.sum(dim=1).clamp(max=top_k).float())
        norms = h[:, 1:].float().norm(dim=-1)
        columns["norm_ratio"].append(norms.max(dim=1).values / norms.median(dim=1).values)
        cls_row = probs.mean(dim=1)[:, 0].float()
        columns["cls_entropy"].append(-(cls_row * cls_row.clamp(min=1e-12).log()).sum(dim=1))
        if previous is None:
            columns["jaccard"].append(torch.full_like(columns["candidates"][-1], float("nan")))
        else:
            union = (candidates | previous).sum(dim=1).float()
            inter = (candidates & previous).sum(dim=1).float()
            columns["jaccard"].append(torch.where(union > 0, inter / union.clamp(min=1), float("nan")))
        previous = candidates
    return {name: torch.stack(values, dim=1) for name, values in columns.items()}


class LayerStatsAccumulator:
    """Means over all crops of a dataset, the heat map of outlier positions at the detection layer and the
    fraction of outliers that had no valid neighbour."""

    def __init__(self) -> None:
        self.sums: Dict[str, torch.Tensor] = {}
        self.counts: Dict[str, torch.Tensor] = {}
        self.heatmaps: Dict[Tuple[int, int], torch.Tensor] = {}
        self.crops_per_grid: Dict[Tuple[int, int], int] = {}
        self.crops = 0
        self.outliers = 0
        self.without_neighbour = 0

    def update(self, aux: Dict[str, Any]) -> None:
        stats = aux.get("layer_stats")
        if stats is None:
            return
        for name, values in stats.items():
            values = values.detach().double().cpu()
            finite = ~torch.isnan(values)
            self.sums[name] = self.sums.get(name, 0) + torch.where(finite, values, 0).sum(dim=0)
            self.counts[name] = self.counts.get(name, 0) + finite.sum(dim=0)
        self.crops += next(iter(stats.values())).shape[0]
        outliers: Optional[OutlierSets] = aux.get("outlier_sets")
        if outliers is not None:
            grid = tuple(aux["grid_size"])
            mask = outliers.mask(grid[0] * grid[1]).sum(dim=0).reshape(grid).double().cpu()
            self.heatmaps[grid] = self.heatmaps.get(grid, 0) + mask
            self.crops_per_grid[grid] = self.crops_per_grid.get(grid, 0) + outliers.indices.shape[0]
            self.outliers += int(outliers.counts().sum())
            self.without_neighbour += int(aux["no_neighbour"].sum())

    def merge(self, other: "LayerStatsAccumulator") -> None:
        """Add another accumulator's sums (e.g. another rank's)."""
        for name, values in other.sums.items():
            self.sums[name] = self.sums.get(name, 0) + values
            self.counts[name] = self.counts.get(name, 0) + other.counts[name]
        for grid, counts in other.heatmaps.items():
            self.heatmaps[grid] = self.heatmaps.get(grid, 0) + counts
            self.crops_per_grid[grid] = self.crops_per_grid.get(grid, 0) + other.crops_per_grid[grid]
        self.crops += other.crops
        self.outliers += other.outliers
        self.without_neighbour += other.without_neighbour

    def result(self) -> Dict[str, Any]:
        if not self.sums:
            return {}
        first = next(iter(self.sums.values()))
        result: Dict[str, Any] = {"layer": list(range(len(first))), "n_crops": self.crops}
        for name in STAT_NAMES:
            counts = self.counts[name]
            result[name] = [float(s / c) if c > 0 else None for s, c in zip(self.sums[name], counts)]
        result["outliers_at_detect"] = self.outliers
        result["filled_without_neighbour"] = self.without_neighbour
        result["filled_without_neighbour_fraction"] = (
            self.without_neighbour / self.outliers if self.outliers else None)
        if self.heatmaps:  # the most common window grid; crops of smaller images have other grids
            grid = max(self.crops_per_grid, key=self.crops_per_grid.get)
            result["heatmap"] = {"grid": list(grid), "counts": self.heatmaps[grid].tolist(),
                                 "n_crops": self.crops_per_grid[grid]}
        return result
