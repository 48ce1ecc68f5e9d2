"""ResCLIP, CLIPer and ProxyCLIP: hand-checked steps, per-dataset values, batching, and every new preset end to end.

Fidelity to the released code is checked in tests/test_release_fidelity.py."""
from __future__ import annotations

import math

import pytest
import torch

import sfp
from sfp.config.protocol import effective_protocol
from sfp.errors import ConfigError
from sfp.methods.cliper import fused_attention_per_row
from sfp.methods.resclip import default_rcs_layers, sfr_matrix
from sfp.models.text import QueryEmbeddings
from sfp.runner import run_job

from .helpers import tiny_overrides

NEW_PRESETS = ["resclip", "resclip_clearclip", "resclip_sclip", "cliper", "proxyclip"]


def _model(tmp_path, *overrides):
    return sfp.build_model(sfp.compose(tiny_overrides(tmp_path) + list(overrides)), device="cpu")


@pytest.fixture(scope="module")
def crops():
    return torch.randn(3, 3, 64, 96, generator=torch.Generator().manual_seed(0))  # a 4 x 6 (non-square) grid


@pytest.fixture(scope="module")
def queries():
    embeddings = torch.nn.functional.normalize(torch.randn(4, 32, generator=torch.Generator().manual_seed(1)), dim=-1)
    return QueryEmbeddings(embeddings, torch.tensor([0, 0, 1, 2]), 3)


# ---- hand-checked steps ----------------------------------------------------------------------------------------

def test_rcs_blocks_are_the_releases_5_to_8_and_scale_below_ten_blocks():
    assert default_rcs_layers(12) == default_rcs_layers(24) == [5, 6, 7, 8]
    assert default_rcs_layers(4) == [1, 2]
    assert all(max(default_rcs_layers(d)) <= d - 2 for d in range(3, 10))


def test_sfr_matrix_of_a_two_label_strip():
    """Labels [0, 0, 1] on a 1 x 3 grid, sigma so small that the blur is the identity: same-label pairs 1,
    rows normalised; the entity check passes (straight same-label paths); CLS row and column 0."""
    labels = torch.tensor([[[0, 0, 1]]])
    s = sfr_matrix(labels, sigma=0.1, separate_entities=True)[0, 0]
    expected = torch.tensor([[0.5, 0.5, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 1.0]])
    torch.testing.assert_close(s[1:, 1:], expected, atol=1e-6, rtol=0)
    assert s[0].abs().sum() == 0 and s[:, 0].abs().sum() == 0


def test_sfr_entity_check_decays_a_same_label_pair_split_by_another_label():
    """Labels [0, 1, 1, 0]: the release's check samples the first steps(i, j) + 1 of max_steps + 1 points of the
    segment; from patch 0 to patch 3 (3 steps of 3) the path crosses label 1, so that pair decays by exp(-1)."""
    labels = torch.tensor([[[0, 1, 1, 0]]])
    kept = sfr_matrix(labels, sigma=0.1, separate_entities=False)[0, 0, 1:, 1:]
    decayed = sfr_matrix(labels, sigma=0.1, separate_entities=True)[0, 0, 1:, 1:]
    assert math.isclose(float(kept[0, 3] / kept[0, 0]), 1.0, rel_tol=1e-6)
    assert math.isclose(float(decayed[0, 3] / decayed[0, 0]), math.exp(-1.0), rel_tol=1e-5)


def test_cliper_fused_attention_drifts_one_balancing_pass_per_row():
    summed = torch.tensor([[[[2.0, 1.0, 0.5], [1.0, 4.0, 2.0], [3.0, 0.2, 1.0]]]])
    rows = fused_attention_per_row(summed, 3)
    once = summed / summed.sum(-2, keepdim=True)
    once = once / once.sum(-1, keepdim=True)
    m = (once + once.transpose(-2, -1)) / 2
    m = (m - m.mean(-2, keepdim=True)).clamp(min=0)
    torch.testing.assert_close(rows[0], m / m.sum(-1, keepdim=True))
    assert not torch.allclose(rows[0], rows[2])  # row 2 saw three passes
    for fused in rows:
        torch.testing.assert_close(fused.sum(-1), torch.ones(1, 1, 3))


def test_proxy_attention_keeps_a_fully_masked_token_on_itself(tmp_path):
    """A uniform crop: every VFM similarity is 1, beta * mean = 1.2 > 1 masks every entry; the release gives NaN,
    keep_self (default) lets each token attend to itself."""
    crop = torch.zeros(1, 3, 64, 64)
    kept = _model(tmp_path, "method=proxyclip", "vfm=tiny_dino").dense_features(crop)
    assert torch.isfinite(kept).all()
    release = _model(tmp_path, "method=proxyclip", "vfm=tiny_dino", "method.keep_self=false").dense_features(crop)
    assert torch.isnan(release).all()


# ---- per-dataset values ----------------------------------------------------------------------------------------

def test_per_dataset_values_come_from_the_dataset_unless_set_and_are_recorded():
    run = sfp.compose(["method=resclip", "datasets=benchmarks"])
    assert effective_protocol(run, "voc20").as_dict()["method_values"] == {
        "rcs_lambda": 0.6, "rcs_tau": 2.0, "sfr_lambda": 0.6, "sfr_tau": 2.1, "temp_thd": 0.1}
    run = sfp.compose(["method=resclip", "datasets=benchmarks", "method.temp_thd=0.9"])
    assert effective_protocol(run, "voc20").as_dict()["method_values"]["temp_thd"] == 0.9
    # a backbone's tuned values win over the dataset's (CLIPer's ViT-L/14 configs)
    run = sfp.compose(["method=cliper", "datasets=benchmarks", "backbone=vit_l14"])
    assert effective_protocol(run, "voc21").as_dict()["method_values"]["select_layer"] == -2
    assert effective_protocol(sfp.compose(["method=sfp"]), "demo").as_dict()["method_values"] == {}


@pytest.mark.parametrize("override, key", [
    (["+datasets.demo.method_values.nomethod.x=1"], "datasets.demo.method_values"),
    (["+datasets.demo.method_values.resclip.sigma=1"], "datasets.demo.method_values.resclip"),
    (["method=resclip", "+datasets.demo.method_values.resclip.temp_thd=2.0"],
     "datasets.demo.method_values.resclip.temp_thd"),
    (["method=cliper", "method.select_layer=0"], "method.select_layer"),
    (["method=resclip", "method.rcs_lambda=nan"], "method.rcs_lambda"),
    (["method=proxyclip", "method.beta=-1"], "method.beta"),
])
def test_bad_per_dataset_or_method_values_name_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        sfp.compose(override)


def test_a_select_layer_beyond_the_depth_is_refused_at_build(tmp_path):
    with pytest.raises(ConfigError, match="method.select_layer"):
        _model(tmp_path, "method=cliper", "method.select_layer=-13")


def test_a_vfm_method_without_a_vfm_says_which_to_set(tmp_path):
    with pytest.raises(ConfigError, match="vfm=dino_b8"):
        _model(tmp_path, "method=proxyclip", "vfm=none")


def test_a_text_method_without_queries_says_how_to_pass_them(tmp_path, crops):
    with pytest.raises(ConfigError, match="queries="):
        _model(tmp_path, "method=cliper").dense_features(crops)


# ---- batching, outputs -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("preset", NEW_PRESETS)
def test_batched_equals_per_image(tmp_path, crops, queries, preset):
    model = _model(tmp_path, f"method={preset}", "vfm=tiny_dino")
    out = model.dense_features(crops, queries=queries, background=True)
    assert torch.isfinite(out).all()
    for i in range(len(crops)):
        single = model.dense_features(crops[i:i + 1], queries=queries, background=True)
        torch.testing.assert_close(single[0], out[i], atol=1e-5, rtol=1e-4)


def test_output_kinds_and_grids(tmp_path, crops, queries):
    cliper = _model(tmp_path, "method=cliper").dense_features(crops, queries=queries, background=True)
    assert cliper.shape == (3, 24, 4) and (cliper >= 0).all()  # per-query scores on CLIP's 4 x 6 grid
    proxy = _model(tmp_path, "method=proxyclip", "vfm=tiny_dino")
    assert proxy.patch_size == (8, 8) and proxy.dense_features(crops).shape == (3, 8 * 12, 32)  # the VFM's grid
    features, aux = _model(tmp_path, "method=resclip").dense_features(crops, queries=queries, return_aux=True)
    assert features.shape == (3, 24, 32) and aux["sfr_labels"].shape == (3, 4, 6)
    assert int(aux["sfr_labels"].max()) < 4


def test_the_switches_change_the_features(tmp_path, crops, queries):
    base = _model(tmp_path, "method=resclip").dense_features(crops, queries=queries)
    for switch in ("method.rcs=false", "method.sfr=false", "method.base=clearclip"):
        other = _model(tmp_path, "method=resclip", switch).dense_features(crops, queries=queries)
        assert (other - base).abs().max() > 1e-4, switch
    fused = _model(tmp_path, "method=cliper").dense_features(crops, queries=queries)
    alone = _model(tmp_path, "method=cliper", "method.fuse_embeddings=false").dense_features(crops, queries=queries)
    assert (fused - alone).abs().max() > 1e-4


# ---- every new preset end to end -------------------------------------------------------------------------------

@pytest.mark.parametrize("preset", NEW_PRESETS)
def test_every_new_preset_runs_end_to_end_on_the_tiny_model(tmp_path, tiny_voc, preset):
    _, overrides = tiny_voc
    cfg = sfp.compose(overrides + [f"method={preset}", "vfm=tiny_dino"])
    record = run_job(cfg, tmp_path / "out")
    assert record["status"] == "complete" and 0 <= record["metrics"]["voc21"]["miou"] <= 100
    if preset.startswith("resclip"):
        assert record["protocol"]["voc21"]["method_values"]["temp_thd"] == 0.5  # VOC21's tuned value
    if preset == "proxyclip":
        assert record["model"]["vfm_source"] == "random-init"
