"""SFP's outlier detectors and neighbour fill, on hand-checkable tiny cases (docs/methods.md, 'SFP: outlier mitigator')."""
from __future__ import annotations

import pytest
import torch

from tests.helpers import synthetic_attention
from sfp.methods.outliers import (OutlierSets, detect_l2, detect_lof, detect_som, lof_scores, neighbour_fill)


def _sets(*per_image):
    k = max(len(p) for p in per_image)
    indices = torch.zeros(len(per_image), k, dtype=torch.long)
    valid = torch.zeros(len(per_image), k, dtype=torch.bool)
    for i, p in enumerate(per_image):
        indices[i, :len(p)] = torch.tensor(p, dtype=torch.long)
        valid[i, :len(p)] = True
    return OutlierSets(indices, valid)


def _grid(values, rows, cols):
    """(1, N, 1) tokens from a row-major list of scalars."""
    return torch.tensor(values, dtype=torch.float32).view(1, rows * cols, 1)


# ---- neighbour fill ---------------------------------------------------------------------------------------------
def test_an_interior_outlier_becomes_the_mean_of_its_eight_neighbours():
    tokens = _grid([1, 2, 3, 4, 100, 6, 7, 8, 9], 3, 3)
    filled, without = neighbour_fill(tokens, (3, 3), _sets([4]))
    assert filled.flatten().tolist() == [1, 2, 3, 4, (1 + 2 + 3 + 4 + 6 + 7 + 8 + 9) / 8, 6, 7, 8, 9]
    assert without.tolist() == [0]


def test_border_cells_average_only_the_neighbours_inside_the_grid():
    tokens = _grid([100, 2, 3, 4, 5, 6, 7, 8, 9], 3, 3)
    filled, _ = neighbour_fill(tokens, (3, 3), _sets([0]))
    assert filled.flatten()[0].item() == pytest.approx((2 + 4 + 5) / 3)


def test_adjacent_outliers_ignore_each_other_and_read_the_unmodified_grid():
    tokens = _grid([1, 50, 60, 4, 5, 6], 2, 3)  # outliers at (0,1) and (0,2) of a 2x3 grid
    filled, _ = neighbour_fill(tokens, (2, 3), _sets([1, 2]))
    assert filled.flatten().tolist() == [1, (1 + 4 + 5 + 6) / 4, (5 + 6) / 2, 4, 5, 6]


def test_an_outlier_without_a_valid_neighbour_is_kept_by_default_or_zeroed_and_counted():
    tokens = _grid([7, 8, 9, 10], 2, 2)
    everything = _sets([0, 1, 2, 3])
    kept, without = neighbour_fill(tokens, (2, 2), everything)
    assert kept.flatten().tolist() == [7, 8, 9, 10] and without.tolist() == [4]
    zeroed, without = neighbour_fill(tokens, (2, 2), everything, keep_without_neighbour=False)
    assert zeroed.flatten().tolist() == [0, 0, 0, 0] and without.tolist() == [4]


def test_fill_is_per_image_in_a_batch():
    tokens = torch.cat([_grid([1, 2, 3, 4, 100, 6, 7, 8, 9], 3, 3), _grid([100, 2, 3, 4, 5, 6, 7, 8, 9], 3, 3)])
    filled, _ = neighbour_fill(tokens, (3, 3), _sets([4], [0]))
    assert filled[0, 4, 0].item() == 5 and filled[0, 0, 0].item() == 1
    assert filled[1, 0, 0].item() == pytest.approx((2 + 4 + 5) / 3) and filled[1, 4, 0].item() == 5


# ---- detectors ---------------------------------------------------------------------------------------------------


def test_som_keeps_patches_with_scaled_cls_attention_above_self_attention_sorted_and_truncated():
    # patches:          0     1     2     3     4
    cls_row = [0.0, 0.30, 0.05, 0.20, 0.10, 0.35]
    diagonal = [0.40, 0.50, 0.20, 0.16, 0.60]
    # c = 1.5 * cls: 0.45 0.075 0.30 0.15 0.525 ; c > s for patches 0, 2 (0.30 > 0.20) -- strict -- not 3 (0.15<0.16)
    sets = detect_som(synthetic_attention(cls_row, diagonal), top_k=10, cls_scale=1.5)
    assert sets.per_image()[0].tolist() == [0, 2]
    assert detect_som(synthetic_attention(cls_row, diagonal), top_k=1, cls_scale=1.5).per_image()[0].tolist() == [0]
    assert detect_som(synthetic_attention(cls_row, diagonal), top_k=10, cls_scale=1.0).per_image()[0].tolist() == []


def test_som_sets_are_per_image_with_their_own_sizes():
    first = synthetic_attention([0.0, 0.9, 0.1, 0.0], [0.1, 0.5, 0.5])
    second = synthetic_attention([0.0, 0.0, 0.1, 0.9], [0.5, 0.5, 0.1])
    sets = detect_som(torch.cat([first, second]), top_k=10, cls_scale=1.5)
    assert [s.tolist() for s in sets.per_image()] == [[0], [2]]
    assert sets.per_image()[0].dtype == torch.long


def test_l2_takes_the_largest_norms_in_descending_order():
    patches = torch.tensor([[[1.0, 0], [0, 5.0], [3.0, 0], [0, 0.5]]])
    assert detect_l2(patches, top_k=2).per_image()[0].tolist() == [1, 2]


def _lof_reference(x, k):
    """Loop version of the released LOF score, written from the definition."""
    n = x.shape[0]
    d = ((x[:, None] - x[None]) ** 2).sum(-1)
    neighbours, kdist = [], []
    for i in range(n):
        others = sorted((d[i, j].item(), j) for j in range(n) if j != i)[:k]
        neighbours.append([j for _, j in others])
        kdist.append(others[-1][0])
    lrd = [k / sum(max(d[i, j].item(), kdist[i]) for j in neighbours[i]) for i in range(n)]
    return torch.tensor([sum(lrd[j] for j in neighbours[i]) / k / lrd[i] for i in range(n)])


def test_lof_matches_a_loop_implementation_and_reduces_to_the_k_distance_ratio():
    x = torch.randn(1, 40, 3, generator=torch.Generator().manual_seed(0))
    scores = lof_scores(x, neighbours=30)[0]
    torch.testing.assert_close(scores, _lof_reference(x[0], 30).float(), rtol=1e-4, atol=1e-5)
    d = torch.cdist(x[0], x[0]).pow(2).fill_diagonal_(float("inf"))
    kd = d.topk(30, largest=False).values[:, -1]
    nn_idx = d.topk(30, largest=False).indices
    torch.testing.assert_close(scores, kd * (1 / kd[nn_idx]).mean(dim=1), rtol=1e-4, atol=1e-5)


def test_lof_flags_a_planted_far_token_and_returns_indices_in_ascending_order():
    x = torch.randn(1, 64, 4, generator=torch.Generator().manual_seed(1))
    x[0, 37] += 50.0
    x[0, 5] += 40.0
    found = detect_lof(x, neighbours=30, contamination=0.05).per_image()[0].tolist()
    assert 5 in found and 37 in found and found == sorted(found)
    assert len(found) <= 4  # above the 95% quantile of 64 scores
