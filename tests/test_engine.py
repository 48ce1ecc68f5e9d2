"""The dense inference engine: window geometry, batching invariance, post-processing rules."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import sfp
from sfp.config.protocol import Protocol
from sfp.engine.inference import class_probabilities, postprocess, sliding_window_logits
from sfp.engine.preprocess import normalize, rescaled_size, resize_image
from sfp.engine.windows import sliding_windows, windows_along
from sfp.models.text import QueryEmbeddings

from tests.helpers import tiny_overrides


# ---- geometry -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("length,expected", [
    (224, [0]), (225, [0, 1]), (336, [0, 112]), (337, [0, 112, 113]), (500, [0, 112, 224, 276]), (100, [0]),
])
def test_window_starts_follow_the_mmseg_formula_with_the_last_window_clamped(length, expected):
    assert windows_along(length, crop=224, stride=112) == expected


def test_windows_cover_every_pixel_and_stay_inside():
    height, width = 337, 500
    cover = np.zeros((height, width), int)
    for w in sliding_windows(height, width, 224, 112):
        assert 0 <= w.top < w.bottom <= height and 0 <= w.left < w.right <= width
        assert w.size == (224, 224)
        cover[w.top:w.bottom, w.left:w.right] += 1
    assert cover.min() >= 1


def test_image_smaller_than_the_crop_is_one_window_of_its_own_size():
    assert sliding_windows(100, 150, 224, 112) == [(0, 100, 0, 150)]


@pytest.mark.parametrize("hw,short,expected", [((375, 500), 336, (336, 448)), ((500, 375), 336, (448, 336)),
                                               ((1024, 2048), 560, (560, 1120)), ((100, 5000), 336, (41, 2048))])
def test_rescaled_size_keeps_the_ratio_and_caps_the_long_side(hw, short, expected):
    assert rescaled_size(*hw, short_side=short, max_long_side=2048) == expected


def test_resize_is_bilinear_without_antialiasing():
    image = np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    out = resize_image(image, (20, 30))
    reference = F.interpolate(torch.from_numpy(image).permute(2, 0, 1)[None].float(), size=(20, 30),
                              mode="bilinear", align_corners=False, antialias=False)[0].round()
    assert torch.equal(out, reference)


# ---- batching invariance on the tiny model --------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("engine")
    cfg = sfp.compose(tiny_overrides(tmp) + ["method=maskclip"])
    model = sfp.build_model(cfg, device="cpu")
    queries = model.encode_queries([["cat"], ["dog", "puppy"], ["grass"]], "single")
    return model, queries


def _protocol(short_side=80, crop=64, stride=32):
    return Protocol(short_side=short_side, max_long_side=2048, crop=crop, stride=stride,
                    logit_scale=40.0, prob_thd=0.0, area_thd=0.0)


def test_batched_windows_of_several_images_equal_one_window_at_a_time(tiny):
    model, queries = tiny
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (60, 90, 3), dtype=np.uint8), rng.integers(0, 256, (75, 50, 3), dtype=np.uint8)]
    batched = sliding_window_logits(model.dense_features, images, queries, _protocol(), model.patch_size,
                                    batch_size=64, device=torch.device("cpu"))
    singles = [sliding_window_logits(model.dense_features, [image], queries, _protocol(), model.patch_size,
                                     batch_size=1, device=torch.device("cpu"))[0] for image in images]
    for b, s, image in zip(batched, singles, images):
        assert b.shape == (queries.embeddings.shape[0], *image.shape[:2])
        torch.testing.assert_close(b, s, rtol=0, atol=1e-5)


def test_a_crop_covering_the_whole_image_equals_a_single_forward_pass(tiny):
    model, queries = tiny
    image = np.random.default_rng(2).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    logits = sliding_window_logits(model.dense_features, [image], queries, _protocol(short_side=64),
                                   model.patch_size, batch_size=4, device=torch.device("cpu"))[0]
    crop = normalize(resize_image(image, (64, 64)))[None]
    features = F.normalize(model.dense_features(crop), dim=-1)  # (1, 16, D) on a 4x4 grid
    direct = (40.0 * features @ queries.embeddings.T).transpose(1, 2).reshape(1, -1, 4, 4)
    direct = F.interpolate(direct, size=(64, 64), mode="bilinear", align_corners=False)[0]
    torch.testing.assert_close(logits, direct, rtol=0, atol=1e-5)


def test_other_crop_sizes_interpolate_the_positional_embedding(tiny):
    model, _ = tiny
    features = model.dense_features(torch.randn(2, 3, 96, 128))
    assert features.shape == (2, 6 * 8, model.clip.visual.output_dim)


# ---- post-processing ----------------------------------------------------------------------------------------------
def test_class_probability_is_the_max_over_synonyms_after_a_softmax_over_all_queries():
    queries = QueryEmbeddings(torch.zeros(3, 2), torch.tensor([0, 1, 1]), num_classes=2)
    logits = torch.tensor([1.0, 2.0, 0.5]).view(3, 1, 1)
    probs = class_probabilities(logits, queries)
    softmax = torch.softmax(torch.tensor([1.0, 2.0, 0.5]), 0)
    torch.testing.assert_close(probs.flatten(), torch.stack([softmax[0], softmax[1]]))


def test_prob_thd_sends_unsure_pixels_to_class_zero():
    probs = torch.tensor([[0.1, 0.5], [0.9, 0.5]]).view(2, 1, 2)  # pixel 1 tops at 0.5
    assert postprocess(probs, prob_thd=0.6, area_thd=0).tolist() == [[1, 0]]
    assert postprocess(probs, prob_thd=0.0, area_thd=0).tolist() == [[1, 0]]  # tie -> first class


def test_area_thd_drops_small_foreground_classes_to_their_next_best_class():
    # 10 pixels: class 1 wins 9 foreground pixels, class 2 wins 1 (10% of foreground: not strictly above).
    probs = torch.zeros(3, 1, 10)
    probs[1, 0, :9] = 0.8
    probs[2, 0, 9] = 0.6
    probs[1, 0, 9] = 0.3
    probs[0, 0, :] = 0.1
    labels = postprocess(probs, prob_thd=0.0, area_thd=0.1)
    assert labels.tolist() == [[1] * 10]  # class 2 zeroed: its pixel goes to class 1, not to background
    labels = postprocess(probs, prob_thd=0.35, area_thd=0.1)
    assert labels.tolist() == [[1] * 9 + [0]]  # then prob_thd: 0.3 < 0.35 -> background
    assert postprocess(probs, prob_thd=0.0, area_thd=0.05).tolist() == [[1] * 9 + [2]]


# ---- precision -------------------------------------------------------------------------------------------------
def test_float16_on_the_cpu_runs_emulated_with_a_warning_and_stays_close_to_float32(tmp_path, caplog):
    image = np.random.default_rng(3).integers(0, 256, (64, 96, 3), dtype=np.uint8)
    base = tiny_overrides(tmp_path) + ["inference.device=cpu", "datasets.voc21.short_side=64"]
    full = sfp.Segmenter(sfp.compose(base)).logits([image])[0]
    with caplog.at_level(logging.WARNING, logger="sfp.engine.device"):
        half = sfp.Segmenter(sfp.compose(base + ["inference.precision=float16"])).logits([image])[0]
    assert "float16 on cpu runs emulated float16 kernels" in caplog.text
    assert half.dtype == torch.float32 and (half - full).abs().max() < 0.01 * full.abs().max()
    assert not torch.equal(half, full)  # float16 really ran


def test_bfloat16_autocast_stays_close_to_float32(tmp_path):
    image = np.random.default_rng(3).integers(0, 256, (64, 96, 3), dtype=np.uint8)
    base = tiny_overrides(tmp_path) + ["inference.device=cpu", "datasets.voc21.short_side=64"]
    full = sfp.Segmenter(sfp.compose(base)).logits([image])[0]
    half = sfp.Segmenter(sfp.compose(base + ["inference.precision=bfloat16"])).logits([image])[0]
    assert half.dtype == torch.float32 and (half - full).abs().max() < 0.05 * full.abs().max()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("precision", ["float16", "bfloat16"])
def test_mixed_precision_on_the_gpu_matches_float32_predictions_closely(tmp_path, precision):
    image = np.random.default_rng(4).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    base = tiny_overrides(tmp_path) + ["inference.device=cuda", "datasets.voc21.short_side=96"]
    full = sfp.Segmenter(sfp.compose(base)).predict(image)
    mixed = sfp.Segmenter(sfp.compose(base + [f"inference.precision={precision}"])).predict(image)
    assert (full == mixed).mean() > 0.95
