"""The SFP method on tiny random-weight backbones: switches, per-image semantics, depths, presets."""
from __future__ import annotations

import itertools

import pytest
import torch

import sfp
from sfp.config import catalog
from sfp.errors import ConfigError
from sfp.runner import run_job

from tests.helpers import tiny_overrides

SWITCHES = ["mitigator", "enhancer", "integrator", "aggregation"]
PRESETS = sorted(catalog.presets())


def _model(tmp_path, *overrides):
    return sfp.build_model(sfp.compose(tiny_overrides(tmp_path) + ["method=sfp", *overrides]), device="cpu")


@pytest.fixture(scope="module")
def crops():
    return torch.randn(3, 3, 64, 96, generator=torch.Generator().manual_seed(0))  # a 4 x 6 (non-square) grid


@pytest.mark.parametrize("switches", list(itertools.product(["on", "off"], repeat=4)))
def test_every_on_off_combination_runs_and_batched_equals_per_image(tmp_path, crops, switches):
    model = _model(tmp_path, *[f"{n}={s}" for n, s in zip(SWITCHES, switches)], "mitigator.top_k=3")
    features, aux = model.dense_features(crops, return_aux=True)
    assert features.shape == (3, 24, 32) and torch.isfinite(features).all()
    for i in range(3):
        single, single_aux = model.dense_features(crops[i:i + 1], return_aux=True)
        torch.testing.assert_close(single[0], features[i], atol=1e-5, rtol=1e-4)
        assert single_aux["outliers"][0].tolist() == aux["outliers"][i].tolist()


@pytest.mark.parametrize("component", SWITCHES)
def test_each_component_changes_the_output(tmp_path, crops, component):
    on = _model(tmp_path, "mitigator.top_k=3").dense_features(crops)
    off = _model(tmp_path, "mitigator.top_k=3", f"{component}=off").dense_features(crops)
    assert (on - off).abs().max() > 1e-4


def test_all_components_off_is_self_self_attention_over_the_detect_blocks_patches_plus_the_cls_residual(tmp_path, crops):
    model = _model(tmp_path, *[f"{n}=off" for n in SWITCHES])
    tower = model.tower
    last = tower.depth - 1
    h = tower.run(crops, num_blocks=last).tokens[10]  # detect = 10 for 12 blocks
    q, k, v = tower.qkv(last, tower.ln_1(last, h[:, 1:]))
    weights = (torch.softmax(q @ q.transpose(-2, -1) / 4, -1) + torch.softmax(k @ k.transpose(-2, -1) / 4, -1)) / 2
    expected = tower.project(tower.out_proj(last, weights @ v) + 0.3 * h[:, :1])
    torch.testing.assert_close(model.dense_features(crops), expected, atol=1e-5, rtol=1e-4)


def test_outliers_come_back_per_image_as_long_tensors_of_flat_patch_indices(tmp_path, crops):
    _, aux = _model(tmp_path, "mitigator.top_k=4").dense_features(crops, return_aux=True)
    assert len(aux["outliers"]) == 3
    for found in aux["outliers"]:
        assert found.dtype == torch.long and len(found) <= 4 and ((0 <= found) & (found < 24)).all()
    assert aux["layer_stats"]["candidates"].shape == (3, 11)


def test_a_planted_outlier_dominating_the_cls_attention_is_found_first_and_filled_away(tmp_path, crops, monkeypatch):
    planted = 9  # row 1, column 3 of the 4 x 6 grid

    def run_with(value):
        model = _model(tmp_path, "mitigator.top_k=3")
        original = model.tower.run_plans

        def planted_run(*args, **kwargs):
            [trace] = original(*args, **kwargs)
            trace.attention[10] = trace.attention[10].clone()
            trace.attention[10][:, :, 0, 1 + planted] = 0.9  # the CLS query looks almost only at this patch
            trace.tokens[10] = trace.tokens[10].clone()
            trace.tokens[10][:, 1 + planted] = value  # and the token itself is huge
            return [trace]

        monkeypatch.setattr(model.tower, "run_plans", planted_run)
        return model.dense_features(crops, return_aux=True)

    big, aux = run_with(torch.full((32,), 50.0))
    other, _ = run_with(torch.full((32,), -80.0))
    assert all(found[0].item() == planted for found in aux["outliers"])
    torch.testing.assert_close(big, other)  # the planted value no longer reaches the output


def test_mid_forward_mitigation_feeds_filled_tokens_to_later_blocks(tmp_path, crops):
    release = _model(tmp_path, "mitigator.top_k=3").dense_features(crops)
    every_layer = _model(tmp_path, "mitigator.top_k=3", "mitigator.layers=[2,5,8]").dense_features(crops)
    assert (release - every_layer).abs().max() > 1e-4
    with pytest.raises(ConfigError, match="mitigator.layers"):
        _model(tmp_path, "mitigator.layers=[10]")


@pytest.mark.parametrize("detector", ["som", "l2", "lof"])
def test_every_detector_runs(tmp_path, crops, detector):
    features, aux = _model(tmp_path, f"mitigator.detector={detector}", "mitigator.lof_neighbours=8").dense_features(
        crops, return_aux=True)
    assert torch.isfinite(features).all() and len(aux["outliers"]) == 3


def test_integrator_attention_maps_source_differs_from_features(tmp_path, crops):
    features = _model(tmp_path).dense_features(crops)
    maps = _model(tmp_path, "integrator.source=attention_maps").dense_features(crops)
    assert (features - maps).abs().max() > 1e-4


def test_a_24_block_backbone_takes_the_vit_l14_indices(tmp_path, crops):
    model = _model(tmp_path, "backbone.model=sfp-tiny-24")
    method = model.method
    assert (method.detect, method.ref, method.aux, method.integrate) == (22, 16, 6, list(range(8, 20)))
    assert model.dense_features(crops).shape == (3, 24, 32)


def test_sfp_early_integrates_one_block_more():
    cfg = sfp.compose(["backbone=tiny", "method=sfp_early"])
    assert sfp.build_model(cfg, device="cpu").method.integrate == list(range(3, 11))


def test_other_depths_need_explicit_indices_and_out_of_range_ones_are_refused(tmp_path):
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    model = CLIP(32, CLIPVisionCfg(layers=7, width=64, patch_size=16, image_size=64),
                 CLIPTextCfg(context_length=16, vocab_size=49408, width=64, heads=1, layers=1))
    torch.save(model.state_dict(), tmp_path / "seven.pt")
    base = tiny_overrides(tmp_path) + ["backbone=custom", f"backbone.checkpoint={tmp_path / 'seven.pt'}", "method=sfp"]
    with pytest.raises(ConfigError, match=r"backbone.layers.detect is not set and a 7-block backbone"):
        sfp.build_model(sfp.compose(base), device="cpu")
    with pytest.raises(ConfigError, match=r"backbone.layers.detect=9 is out of range"):
        sfp.build_model(sfp.compose(base + ["backbone.layers.detect=9"]), device="cpu")
    explicit = base + ["backbone.layers.detect=5", "backbone.layers.ref=4", "backbone.layers.aux=1",
                       "backbone.layers.integrate=[1,2,3]"]
    assert sfp.build_model(sfp.compose(explicit), device="cpu").dense_features(torch.randn(1, 3, 64, 64)).shape == \
        (1, 16, 32)


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_runs_end_to_end_on_the_tiny_dataset(tiny_voc, tmp_path, preset):
    _, overrides = tiny_voc
    record = run_job(sfp.compose(overrides + [f"method={preset}"]), tmp_path / preset)
    assert record["status"] == "complete" and record["metrics"]["voc21"]["n_images"] == 3
    stats = record["outlier_stats"]["voc21"]
    assert len(stats["cls_entropy"]) == 11 and stats["n_crops"] > 0
