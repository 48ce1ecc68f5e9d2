"""PAMR post-processing: off by default, refines scores towards image edges when switched on."""
from __future__ import annotations

import numpy as np
import torch

import sfp
from sfp.engine.pamr import pamr

from tests.helpers import tiny_overrides


def test_scores_spread_within_a_uniform_region_but_not_across_a_colour_edge():
    image = torch.zeros(1, 3, 16, 16)
    image[..., 8:] = 1.0  # two flat halves
    scores = torch.zeros(1, 2, 16, 16)
    scores[0, 0, :, :8] = 1.0
    scores[0, 1, :, 8:] = 1.0
    scores[0, :, 3, 3] = torch.tensor([0.0, 1.0])  # one wrong pixel inside the left half
    refined = pamr(image, scores, steps=10, dilations=[1, 2])
    assert refined[0, 0, 3, 3] > refined[0, 1, 3, 3]  # the wrong pixel follows its region
    assert torch.allclose(refined[0, :, :, 12:], scores[0, :, :, 12:], atol=1e-4)  # nothing leaks over the edge
    torch.testing.assert_close(refined.sum(dim=1), scores.sum(dim=1))  # a convex combination of neighbours


def test_pamr_is_off_by_default_and_changes_the_logits_when_on(tmp_path):
    cfg = sfp.compose(tiny_overrides(tmp_path) + ["datasets.voc21.short_side=64"])
    assert cfg.inference.pamr is False
    image = np.random.default_rng(0).integers(0, 256, (64, 96, 3), dtype=np.uint8)
    plain = sfp.Segmenter(cfg).logits([image])[0]
    refined = sfp.Segmenter(sfp.compose(tiny_overrides(tmp_path) + [
        "datasets.voc21.short_side=64", "inference.pamr=true", "inference.pamr_dilations=[1,2]"])).logits([image])[0]
    assert refined.shape == plain.shape and (refined - plain).abs().max() > 1e-3
