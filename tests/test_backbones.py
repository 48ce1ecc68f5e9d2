"""Backbone loading: open_clip names, local checkpoints of any width and depth, safe reads, clear errors."""
from __future__ import annotations

import pickle

import pytest
import torch
from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

import sfp
from sfp.backbones.loading import load_backbone, read_state_dict
from sfp.errors import WeightsError


def _openai_style_clip(layers=3, width=128) -> CLIP:
    """A CLIP of a width/depth no named config has (heads of 64, as OpenAI's), QuickGELU."""
    torch.manual_seed(0)
    return CLIP(32, CLIPVisionCfg(layers=layers, width=width, patch_size=16, image_size=64),
                CLIPTextCfg(context_length=16, vocab_size=49408, width=64, heads=1, layers=1), quick_gelu=True).eval()


def _same_outputs(a: CLIP, b: CLIP):
    images = torch.randn(2, 3, 64, 64)
    text = torch.randint(0, 49408, (2, 16))
    with torch.no_grad():
        torch.testing.assert_close(a.encode_image(images), b.encode_image(images))
        torch.testing.assert_close(a.encode_text(text), b.encode_text(text))


def _custom(path, *extra):
    return sfp.compose(["backbone=custom", f"backbone.checkpoint={path}", *extra]).backbone


@pytest.mark.parametrize("depth", [3, 12, 24])
def test_an_openai_state_dict_of_any_depth_loads_with_the_architecture_inferred(tmp_path, depth):
    original = _openai_style_clip(layers=depth)
    state = dict(original.state_dict())
    state.update(input_resolution=torch.tensor(64), context_length=torch.tensor(16), vocab_size=torch.tensor(49408))
    torch.save(state, tmp_path / "openai.pt")
    loaded = load_backbone(_custom(tmp_path / "openai.pt"))
    assert len(loaded.model.visual.transformer.resblocks) == depth
    _same_outputs(original, loaded.model)
    assert loaded.source == f"file:{tmp_path / 'openai.pt'}"


def test_safetensors_and_torchscript_checkpoints_load_without_unpickling(tmp_path):
    from safetensors.torch import save_file

    original = _openai_style_clip()
    save_file({k: v.contiguous() for k, v in original.state_dict().items()}, str(tmp_path / "w.safetensors"))
    _same_outputs(original, load_backbone(_custom(tmp_path / "w.safetensors")).model)

    scripted = torch.jit.trace_module(original, {"encode_image": torch.randn(1, 3, 64, 64)}, check_trace=False)
    scripted.save(str(tmp_path / "jit.pt"))
    _same_outputs(original, load_backbone(_custom(tmp_path / "jit.pt")).model)


def test_an_open_clip_checkpoint_loads_into_its_named_architecture(tmp_path):
    cfg = sfp.compose(["backbone=tiny"]).backbone
    original = load_backbone(cfg).model
    torch.save({"state_dict": {f"module.{k}": v for k, v in original.state_dict().items()}}, tmp_path / "oc.pt")
    named = _custom(tmp_path / "oc.pt", "backbone.model=sfp-tiny-12", "backbone.quick_gelu=false")
    _same_outputs(original, load_backbone(named).model)


def test_a_checkpoint_that_does_not_fit_the_named_architecture_says_so(tmp_path):
    torch.save(_openai_style_clip().state_dict(), tmp_path / "w.pt")
    with pytest.raises(WeightsError, match=r"does not match the architecture 'sfp-tiny-12'"):
        load_backbone(_custom(tmp_path / "w.pt", "backbone.model=sfp-tiny-12"))


class _Payload:
    def __reduce__(self):  # would run code if unpickled unsafely
        return (print, ("unsafe unpickling happened",))


def test_pickled_objects_are_refused(tmp_path, capsys):
    with open(tmp_path / "evil.pt", "wb") as handle:
        pickle.dump({"visual.proj": _Payload()}, handle)
    with pytest.raises(WeightsError, match="could not read checkpoint"):
        read_state_dict(tmp_path / "evil.pt")
    assert "unsafe unpickling happened" not in capsys.readouterr().out


def test_missing_checkpoint_file_names_the_path(tmp_path):
    with pytest.raises(WeightsError, match=str(tmp_path / "nope.pt")):
        load_backbone(_custom(tmp_path / "nope.pt"))


def test_a_non_clip_state_dict_is_rejected(tmp_path):
    torch.save({"weight": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(WeightsError, match="not a CLIP ViT state dict"):
        load_backbone(_custom(tmp_path / "other.pt"))


def test_missing_pretrained_weights_offline_say_where_they_were_looked_for_and_how_to_provide_them(tmp_path):
    cfg = sfp.compose(["backbone=vit_b16", f"backbone.weights_cache_dir={tmp_path}"]).backbone
    with pytest.raises(WeightsError) as info:
        load_backbone(cfg)
    message = str(info.value)
    assert str(tmp_path) in message and "backbone.checkpoint" in message and "open_clip.create_model" in message


def test_an_unknown_pretrained_tag_lists_the_known_ones():
    cfg = sfp.compose(["backbone=vit_b16", "backbone.pretrained=nonexistent"]).backbone
    with pytest.raises(WeightsError, match=r"known tags: .*openai"):
        load_backbone(cfg)
