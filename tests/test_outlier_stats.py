"""Per-layer outlier statistics: per crop from attention and tokens, then means over a dataset."""
from __future__ import annotations

import math

import pytest
import torch

from tests.helpers import synthetic_attention
from sfp.methods.outliers import OutlierSets
from sfp.methods.stats import LayerStatsAccumulator, layer_statistics




def test_layer_statistics_count_candidates_and_measure_propagation_between_layers():
    layer0 = synthetic_attention([0.1, 0.5, 0.2, 0.2, 0.0], [0.4, 0.5, 0.1, 0.5])  # c: .75 .3 .3 0 -> {0, 2}; unscaled {0, 2}
    layer1 = synthetic_attention([0.1, 0.5, 0.0, 0.3, 0.1], [0.6, 0.5, 0.1, 0.5])  # c: .75 0 .45 .15 -> {0, 2}; unscaled {2}
    tokens = [torch.tensor([[[0.0, 0], [3.0, 4], [0, 1], [1, 0], [0, 2]]])] * 2  # patch norms 5, 1, 1, 2
    stats = layer_statistics(tokens, {0: layer0, 1: layer1}, cls_scale=1.5, top_k=1)
    assert stats["candidates"].tolist() == [[2.0, 2.0]]
    assert stats["candidates_unscaled"].tolist() == [[2.0, 1.0]]
    assert stats["outliers"].tolist() == [[1.0, 1.0]]  # capped at top_k
    assert stats["norm_ratio"][0, 0].item() == pytest.approx(5 / 1)  # torch's median of (5, 1, 1, 2) is 1
    assert math.isnan(stats["jaccard"][0, 0].item()) and stats["jaccard"][0, 1].item() == 1.0
    cls = torch.tensor([0.1, 0.5, 0.2, 0.2, 0.0])
    assert stats["cls_entropy"][0, 0].item() == pytest.approx(-(cls[cls > 0] * cls[cls > 0].log()).sum().item())


def test_the_accumulator_averages_over_crops_and_builds_the_heat_map_and_no_neighbour_fraction():
    accumulator = LayerStatsAccumulator()
    stats = {name: torch.tensor([[1.0, 2.0], [3.0, float("nan")]]) for name in
             ("candidates", "candidates_unscaled", "outliers", "norm_ratio", "cls_entropy", "jaccard")}
    outliers = OutlierSets(torch.tensor([[0, 3], [3, 0]]), torch.tensor([[True, True], [True, False]]))
    accumulator.update({"layer_stats": stats, "outlier_sets": outliers, "grid_size": (2, 2),
                        "no_neighbour": torch.tensor([1, 0])})
    result = accumulator.result()
    assert result["layer"] == [0, 1] and result["n_crops"] == 2
    assert result["candidates"] == [2.0, 2.0] and result["jaccard"] == [2.0, 2.0]  # NaN entries are skipped
    assert result["heatmap"] == {"grid": [2, 2], "counts": [[1.0, 0.0], [0.0, 2.0]], "n_crops": 2}
    assert result["outliers_at_detect"] == 3 and result["filled_without_neighbour_fraction"] == pytest.approx(1 / 3)
