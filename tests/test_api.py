"""The inference API other projects use: compose -> build_model -> dense_features, and Segmenter.predict."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import sfp
from sfp.errors import DataError

from tests.helpers import tiny_overrides


@pytest.mark.parametrize("method", ["clip", "maskclip"])
def test_dense_features_are_per_patch_features_before_normalisation(tmp_path, method):
    cfg = sfp.compose(tiny_overrides(tmp_path) + [f"method={method}"])
    model = sfp.build_model(cfg)
    crops = torch.randn(3, 3, 64, 64)
    features = model.dense_features(crops)
    assert features.shape == (3, 16, 32)  # 4x4 grid of 16-pixel patches, 32-d embedding
    assert not torch.allclose(features.norm(dim=-1), torch.ones(3, 16))
    features_again, aux = model.dense_features(crops, return_aux=True)
    torch.testing.assert_close(features, features_again)
    assert aux["grid_size"] == (4, 4) and aux["cls_embedding"].shape == (3, 32)
    # per image: the first image alone gives its own features
    torch.testing.assert_close(model.dense_features(crops[:1])[0], features[0], atol=1e-5, rtol=0)


def test_clip_and_maskclip_differ_only_in_the_last_block(tmp_path):
    crops = torch.randn(2, 3, 64, 64)
    clip = sfp.build_model(sfp.compose(tiny_overrides(tmp_path) + ["method=clip"]))
    mask = sfp.build_model(sfp.compose(tiny_overrides(tmp_path) + ["method=maskclip"]))
    assert not torch.allclose(clip.dense_features(crops), mask.dense_features(crops))
    tower = clip.tower
    trace = tower.run(tower.visual.conv1.weight.new_tensor(crops))
    expected = tower.project(trace.tokens[-1])[:, 1:]
    torch.testing.assert_close(clip.dense_features(crops), expected)


def test_segmenter_predicts_a_label_map_of_the_image_size(tmp_path):
    cfg = sfp.compose(tiny_overrides(tmp_path) + ["datasets.voc21.short_side=48"])
    segmenter = sfp.Segmenter(cfg)
    image = np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    labels = segmenter.predict(image)
    assert labels.shape == (50, 70) and labels.dtype == np.int64
    assert labels.min() >= 0 and labels.max() < 21
    np.testing.assert_array_equal(labels, segmenter.predict(image))  # deterministic


def test_segmenter_rejects_images_that_are_not_rgb_uint8(tmp_path):
    segmenter = sfp.Segmenter(sfp.compose(tiny_overrides(tmp_path)))
    with pytest.raises(DataError, match=r"\(H, W, 3\) uint8"):
        segmenter.predict(np.zeros((10, 10), np.float32))
