"""The new methods against tensors their released code produced on the same compact random weights
(tests/data/release_references/PROVENANCE.md): ResCLIP, CLIPer and ProxyCLIP, to 1e-4 at float32, batch 1."""
from __future__ import annotations

import pytest
import torch

import sfp
from sfp.models.text import QueryEmbeddings

from .helpers import REPO

REFERENCES = REPO / "tests" / "data" / "release_references"
RESCLIP_VOC21 = ["method.temp_thd=0.5", "method.rcs_tau=2.0", "method.rcs_lambda=0.3", "method.sfr_tau=2.2",
                 "method.sfr_lambda=0.7"]
VFMS = {
    "dino": ["vfm=custom", f"vfm.checkpoint={REFERENCES / 'dino_tiny_release_keys.pt'}",
             "vfm.model=vit_base_patch8_224", "vfm.arch.img_size=64"],
    "dinov2": ["vfm=custom", "vfm.family=dinov2", f"vfm.checkpoint={REFERENCES / 'dinov2_reg_tiny_release_keys.pt'}",
               "vfm.model=vit_base_patch14_reg4_dinov2", "vfm.arch.img_size=56", "vfm.pos_offset=0.0",
               "vfm.pos_antialias=true"],
}
TINY_VFM = ["vfm.arch.embed_dim=32", "vfm.arch.depth=2", "vfm.arch.num_heads=2"]


@pytest.fixture(scope="module")
def compact(tmp_path_factory):
    """The compact CLIP as a full OpenAI-format checkpoint (its unused text tower filled in), inputs, outputs."""
    state = {k: v.float() for k, v in torch.load(REFERENCES / "compact_clip_12_visual_fp16.pt").items()}
    g = torch.Generator().manual_seed(0)
    block = "transformer.resblocks.0."
    text = {"positional_embedding": (77, 32), "token_embedding.weight": (49408, 32), "ln_final.weight": (32,),
            "ln_final.bias": (32,), "text_projection": (32, 32), block + "attn.in_proj_weight": (96, 32),
            block + "attn.in_proj_bias": (96,), block + "attn.out_proj.weight": (32, 32),
            block + "attn.out_proj.bias": (32,), block + "ln_1.weight": (32,), block + "ln_1.bias": (32,),
            block + "ln_2.weight": (32,), block + "ln_2.bias": (32,), block + "mlp.c_fc.weight": (128, 32),
            block + "mlp.c_fc.bias": (128,), block + "mlp.c_proj.weight": (32, 128), block + "mlp.c_proj.bias": (32,)}
    state.update({key: torch.randn(shape, generator=g) * 0.02 for key, shape in text.items()})
    state["logit_scale"] = torch.tensor(4.6052)
    path = tmp_path_factory.mktemp("compact") / "compact_clip.pt"
    torch.save(state, path)
    inputs = {k: v.float() for k, v in torch.load(REFERENCES / "compact_inputs_fp16.pt").items()}
    return path, inputs, torch.load(REFERENCES / "compact_release_outputs.pt")


def _model(compact, *overrides):
    path = compact[0]
    return sfp.build_model(sfp.compose(["backbone=custom", f"backbone.checkpoint={path}", "stats.enabled=false",
                                        *overrides]), device="cpu")


@pytest.mark.parametrize("base", ["naclip", "clearclip", "sclip"])
@pytest.mark.parametrize("rcs, sfr", [(0, 0), (0, 1), (1, 0), (1, 1)])
def test_resclip_matches_its_release(compact, base, rcs, sfr):
    _, inputs, reference = compact
    queries = inputs["queries"]  # one name per class; the release multiplies by them as stored
    model = _model(compact, "method=resclip", f"method.base={base}", f"method.rcs={bool(rcs)}",
                   f"method.sfr={bool(sfr)}", *RESCLIP_VOC21)
    for i in (0, 1):
        features, aux = model.dense_features(inputs["crops_64x96"][i:i + 1], queries=queries, return_aux=True)
        torch.testing.assert_close(features, reference[f"resclip/{base}/rcs{rcs}_sfr{sfr}/crop{i}"], atol=1e-4, rtol=0)
        if base == "naclip" and rcs and sfr:  # the selected labels, index for index
            assert torch.equal(aux["sfr_labels"][0], reference[f"resclip/naclip/labels/crop{i}"])


@pytest.mark.parametrize("key, overrides", [
    ("fuse1", ["method.select_layer=-1", "method.attention_thr=0.1", "method.logit_scale=100"]),
    ("fuse0", ["method.select_layer=-1", "method.attention_thr=0.1", "method.logit_scale=100",
               "method.fuse_embeddings=false"]),
    ("sel2", ["method.select_layer=-2", "method.attention_thr=0.2", "method.logit_scale=50"]),
])
def test_cliper_matches_its_release(compact, key, overrides):
    """Foreground classes = queries 0..2, the release's background words = queries 3..4 (class 0 here)."""
    _, inputs, reference = compact
    q = inputs["queries"]
    queries = QueryEmbeddings(torch.cat([q[3:], q[:3]]), torch.tensor([0, 0, 1, 2, 3]), 4)
    model = _model(compact, "method=cliper", *overrides)
    for i in (0, 1):
        name = f"cliper/{key}/crop{i}"
        if name not in reference:
            continue
        scores = model.dense_features(inputs["crops_64x96"][i:i + 1], queries=queries, background=True)
        expected = reference[name]  # (3 classes, 4, 6)
        torch.testing.assert_close(scores[0, :, 2:].T.reshape(expected.shape), expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("vfm, crops, key, overrides", [
    ("dino", "crops_64x64", "dino", []),
    ("dino", "crops_64x64", "dino_b08_g5", ["method.beta=0.8", "method.gamma=5.0"]),
    ("dinov2", "crops_56x56", "dinov2", []),
])
def test_proxyclip_matches_its_release(compact, vfm, crops, key, overrides):
    _, inputs, reference = compact
    model = _model(compact, "method=proxyclip", *VFMS[vfm], *TINY_VFM, *overrides)
    for i in (0, 1):
        name = f"proxyclip/{key}/crop{i}"
        if name not in reference:
            continue
        features = model.dense_features(inputs[crops][i:i + 1])
        torch.testing.assert_close(features, reference[name], atol=1e-4, rtol=0)
