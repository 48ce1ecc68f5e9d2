"""Vision foundation models (the `vfm` group): timm definitions, the releases' checkpoints, the releases' features.

The reference features in tests/data/release_references/vfm_features.pt were produced by the DINO (7c446df) and
DINOv2 (b8931f7) releases themselves on the tiny random weights stored beside them
(tests/data/release_references/PROVENANCE.md)."""
from __future__ import annotations

import pytest
import torch

import sfp
from sfp.backbones.vfm_loading import load_vfm
from sfp.errors import ConfigError, WeightsError

from .helpers import REPO

REFERENCES = REPO / "tests" / "data" / "release_references"
RELEASE_CHECKPOINTS = {
    "dino": ("dino_tiny_release_keys.pt",
             ["vfm.model=vit_base_patch8_224", "vfm.arch.img_size=64"]),
    "dinov2": ("dinov2_reg_tiny_release_keys.pt",
               ["vfm.family=dinov2", "vfm.model=vit_base_patch14_reg4_dinov2", "vfm.arch.img_size=56",
                "vfm.pos_offset=0.0", "vfm.pos_antialias=true"]),
}
TINY = ["vfm.arch.embed_dim=32", "vfm.arch.depth=2", "vfm.arch.num_heads=2"]


def _custom(family: str, *extra: str):
    file, overrides = RELEASE_CHECKPOINTS[family]
    return sfp.compose(["vfm=custom", f"vfm.checkpoint={REFERENCES / file}", *overrides, *TINY, *extra]).vfm


@pytest.mark.parametrize("family", sorted(RELEASE_CHECKPOINTS))
def test_a_release_checkpoint_loads_through_timm_and_gives_the_release_features(family):
    reference = torch.load(REFERENCES / "vfm_features.pt")
    tower = load_vfm(_custom(family))
    crops = reference["crops"] if family == "dino" else reference["crops"][..., :42, :56]
    with torch.no_grad():
        features = tower.patch_features(crops)
    assert features.shape[-2:] == (crops.shape[-2] // tower.patch_size[0], crops.shape[-1] // tower.patch_size[1])
    tokens = features.flatten(2).transpose(1, 2)
    torch.testing.assert_close(tokens, reference[family], atol=1e-5, rtol=0)


@pytest.mark.parametrize("option", ["tiny_dino", "tiny_dinov2"])
def test_the_tiny_random_vfms_are_seeded_and_batch_invariant(option):
    cfg = sfp.compose([f"vfm={option}"])
    torch.manual_seed(0)
    first = load_vfm(cfg.vfm)
    torch.manual_seed(0)
    second = load_vfm(cfg.vfm)
    crops = torch.randn(3, 3, 56, 112)
    with torch.no_grad():
        batched = first.patch_features(crops)
        alone = torch.cat([second.patch_features(crops[i:i + 1]) for i in range(3)])
    torch.testing.assert_close(batched, alone, atol=1e-5, rtol=0)
    assert first.source == "random-init"


def test_vfm_none_builds_nothing():
    assert load_vfm(sfp.compose([]).vfm) is None


def test_a_checkpoint_of_another_width_names_the_mismatch():
    with pytest.raises(WeightsError, match=r"shape of .*vfm.arch"):
        load_vfm(_custom("dino", "vfm.arch.embed_dim=64"))


def test_a_checkpoint_missing_a_tensor_names_it(tmp_path):
    state = torch.load(REFERENCES / RELEASE_CHECKPOINTS["dino"][0])
    del state["blocks.1.mlp.fc2.weight"]
    torch.save(state, tmp_path / "broken.pt")
    with pytest.raises(WeightsError, match=r"missing tensor\(s\): blocks\.1\.mlp\.fc2\.weight"):
        load_vfm(_custom("dino", f"vfm.checkpoint={tmp_path / 'broken.pt'}"))


def test_a_wrong_checksum_is_refused():
    with pytest.raises(WeightsError, match="SHA-256"):
        load_vfm(_custom("dino", "vfm.checkpoint_sha256=" + "0" * 64))


def test_an_unknown_timm_architecture_or_tag_is_refused_with_the_known_ones():
    with pytest.raises(WeightsError, match="not a timm architecture"):
        load_vfm(sfp.compose(["vfm=dino_b8", "vfm.model=vit_nonexistent"]).vfm)
    with pytest.raises(WeightsError, match=r"known: .*dino"):
        load_vfm(sfp.compose(["vfm=dino_b8", "vfm.pretrained=nonexistent"]).vfm)


def test_missing_pretrained_weights_offline_say_how_to_provide_them(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = sfp.compose(["vfm=dino_b8", f"vfm.weights_cache_dir={tmp_path}"]).vfm
    with pytest.raises(WeightsError, match=r"vfm\.checkpoint=/path/to/file"):
        load_vfm(cfg)


@pytest.mark.parametrize("override, key", [
    (["vfm=custom"], "vfm=custom needs vfm.checkpoint"),
    (["vfm=dino_b8", "vfm.model=null"], "vfm.model"),
    (["vfm=dino_b8", "vfm.std=[0.2,0.0,0.2]"], "vfm.std"),
    (["vfm=dino_b8", "vfm.arch.depth=0"], "vfm.arch.depth"),
    (["vfm=dino_b8", "vfm.pos_offset=nan"], "vfm.pos_offset"),
])
def test_bad_vfm_settings_name_the_key(override, key):
    with pytest.raises(ConfigError, match=key):
        sfp.compose(override)
