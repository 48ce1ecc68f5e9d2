"""A catalogue of bad inputs and faults a researcher can hit: each one stops with an error that names the
culprit (key, file or variable) and what was expected, or degrades as documented; none ends in a record
marked complete. The float knobs are derived from the settings schema, so a new knob is covered by itself."""
from __future__ import annotations

import dataclasses
import os
import typing
from pathlib import Path
from typing import Iterator, List, Tuple

import numpy as np
import pytest

import sfp
from sfp.config import catalog, schema
from sfp.data import build_dataset, load_class_names
from sfp.errors import ConfigError, DataError, NumericalError, SFPError, WeightsError
from sfp.methods import METHODS
from tests.data_layouts_fixture import build_layout
from tests.helpers import group_schemas, tiny_overrides

GROUPS = {**group_schemas(), "datasets.demo": schema.DatasetConfig}


def _float_fields(cls) -> Iterator[str]:
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        if hints[field.name] in (float, typing.Optional[float]):
            yield field.name


def float_knobs() -> List[Tuple[List[str], str]]:
    """(overrides that select the knob's owner, the knob's key) for every float setting."""
    knobs = [([], f"{group}.{name}") for group, cls in GROUPS.items() for name in _float_fields(cls)]
    for method in METHODS.names():
        preset = next(p for p, e in catalog.presets().items() if e.method == method)
        knobs += [([f"method={preset}"], f"method.{name}") for name in _float_fields(METHODS.get(method).Settings)]
    return knobs


@pytest.mark.parametrize("value", ["inf", "-inf", "nan"])
@pytest.mark.parametrize("owner,key", float_knobs(), ids=[key for _, key in float_knobs()])
def test_a_non_finite_float_knob_is_refused_naming_the_key(owner, key, value):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.") + "=") as info:
        sfp.compose(owner + [f"{key}={value}"])
    assert "finite" in str(info.value) or "range" in str(info.value)


def test_the_catalogue_of_float_knobs_covers_the_known_ones():
    keys = {key for _, key in float_knobs()}
    assert {"enhancer.temperature", "datasets.demo.logit_scale", "method.res_cls", "mitigator.cls_scale",
            "aggregation.beta", "method.sigma", "stats.cls_scale"} <= keys


# ---- data files that are well-formed but wrong ------------------------------------------------------------

def test_a_class_named_twice_is_refused_naming_both_lines(tmp_path):
    names = tmp_path / "names.txt"
    names.write_text("background\ncat\ndog\nCat \n")
    with pytest.raises(DataError, match=r"names\.txt, lines 2 and 4: the class 'Cat' is named twice"):
        load_class_names(str(names))


def test_an_image_listed_twice_in_the_split_file_is_refused_naming_both_lines(tmp_path):
    build_layout("voc21", tmp_path / "data", n=3)
    split = tmp_path / "data" / "VOCdevkit" / "VOC2012" / "ImageSets" / "Segmentation" / "val.txt"
    ids = split.read_text().split()
    split.write_text("\n".join(ids + [ids[0]]) + "\n")
    cfg = sfp.compose(tiny_overrides(tmp_path))
    with pytest.raises(DataError, match=rf"val\.txt, lines 1 and 4: image '{ids[0]}' is listed twice"):
        build_dataset(cfg.datasets["voc21"], "voc21")


# ---- geometry ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("override,key", [("inference.crop=8", "inference.crop"),
                                          ("inference.max_long_side=1", "inference.max_long_side"),
                                          ("datasets.voc21.short_side=8", "datasets.voc21.short_side")])
def test_a_window_or_side_smaller_than_one_patch_is_a_config_error(tmp_path, override, key):
    cfg = sfp.compose(tiny_overrides(tmp_path) + [override, "inference.stride=4"])
    with pytest.raises(ConfigError, match=key.replace(".", r"\.") + r"=\d+ is out of range: expected an integer >= "
                       "the backbone's patch size 16"):
        sfp.build_model(cfg, device="cpu")


@pytest.fixture(scope="module")
def segmenter(tmp_path_factory):
    return sfp.Segmenter(sfp.compose(tiny_overrides(tmp_path_factory.mktemp("seg"))))


@pytest.mark.parametrize("array,expected", [
    (np.zeros((0, 0, 3), np.uint8), r"image 0: the image is empty \(0x0 pixels\)"),
    (np.zeros((10, 10), np.uint8), r"image 0: expected an \(H, W, 3\) uint8 RGB array, got \(10, 10\) uint8"),
    (np.zeros((10, 10, 3), np.float32), r"expected an \(H, W, 3\) uint8 RGB array, got \(10, 10, 3\) float32"),
    (np.zeros((8, 2000, 3), np.uint8), r"a 2000x8 \(WxH\) image resizes to 2048x8 .* thinner than one 16-pixel patch"),
])
def test_the_inference_api_refuses_empty_malformed_and_too_thin_images(segmenter, array, expected):
    with pytest.raises(DataError, match=expected):
        segmenter.predict(array)


def test_a_too_thin_image_of_a_dataset_is_refused_naming_its_file(tmp_path):
    from PIL import Image

    entries = build_layout("voc21", tmp_path / "data", n=2)
    Image.fromarray(np.zeros((4, 300, 3), np.uint8)).save(entries[0].image_path)
    Image.fromarray(np.zeros((4, 300), np.uint8), mode="L").save(entries[0].label_path)
    cfg = sfp.compose(tiny_overrides(tmp_path) + ["datasets.voc21.short_side=16", "inference.max_long_side=64"])
    with pytest.raises(DataError, match=rf"{Path(entries[0].image_path).name}.*thinner than one 16-pixel patch"):
        sfp.run_job(cfg, tmp_path / "run")
    record = tmp_path / "run" / "results.json"
    assert not record.exists() or '"status": "complete"' not in record.read_text()


# ---- environment --------------------------------------------------------------------------------------------

def test_an_invalid_wandb_mode_is_refused_naming_the_variable_and_the_allowed_values(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "bogus")
    build_layout("voc21", tmp_path / "data", n=1)
    overrides = [o for o in tiny_overrides(tmp_path) if o != "tracker=none"]
    with pytest.raises(ConfigError, match=r"WANDB_MODE='bogus' is not a W&B mode: expected one of online, offline"):
        sfp.run_job(sfp.compose(overrides), tmp_path / "run")


def test_an_unwritable_cache_folder_disables_the_text_cache_with_a_warning_and_the_run_completes(tmp_path, caplog):
    build_layout("voc21", tmp_path / "data", n=1)
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "text_embeddings").write_text("a file where the cache folder should be")
    record = sfp.run_job(sfp.compose(tiny_overrides(tmp_path)), tmp_path / "run")
    assert record["status"] == "complete"
    assert "text-embedding cache disabled: cannot write" in caplog.text


# ---- nothing finished is overwritten ------------------------------------------------------------------------

def test_a_complete_record_of_another_configuration_is_never_overwritten(tmp_path):
    build_layout("voc21", tmp_path / "data", n=1)
    first = sfp.run_job(sfp.compose(tiny_overrides(tmp_path)), tmp_path / "job")
    before = (tmp_path / "job" / "results.json").read_bytes()
    changed = sfp.compose(tiny_overrides(tmp_path) + ["enhancer.temperature=2.0", "resume=true"])
    with pytest.raises(ConfigError, match=rf"another configuration \(fingerprint {first['fingerprint']}.*differ in "
                                          r"enhancer\.temperature\): nothing was overwritten"):
        sfp.run_job(changed, tmp_path / "job")
    assert (tmp_path / "job" / "results.json").read_bytes() == before
    again = sfp.run_job(sfp.compose(tiny_overrides(tmp_path) + ["inference.batch_size=3"]), tmp_path / "job")
    assert again["metrics"]["voc21"]["miou"] == first["metrics"]["voc21"]["miou"]  # the same configuration may rerun


def test_a_failed_write_prints_the_metrics_names_the_file_and_keeps_evaluating(tmp_path, monkeypatch, capsys):
    import sfp.runner

    build_layout("voc21", tmp_path / "data", n=1)
    build_layout("ade20k", tmp_path / "data", n=1)
    cfg = sfp.compose(tiny_overrides(tmp_path, "[voc21,ade20k]") + ["datasets.ade20k.short_side=40"])

    def disk_full(path, obj, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(sfp.runner, "write_json_atomic", disk_full)
    with pytest.raises(SFPError, match=r"could not write .*results\.json: No space left on device"):
        sfp.run_job(cfg, tmp_path / "job")
    printed = capsys.readouterr().err
    assert printed.count("metrics computed so far") == 3  # after each dataset and at the end
    assert '"voc21"' in printed and '"ade20k"' in printed and '"miou"' in printed


# ---- non-finite numbers -------------------------------------------------------------------------------------

def test_weights_with_a_nan_are_refused_naming_the_tensor(tmp_path):
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg
    import torch

    model = CLIP(32, CLIPVisionCfg(layers=2, width=64, patch_size=16, image_size=64),
                 CLIPTextCfg(context_length=16, vocab_size=49408, width=64, heads=1, layers=1))
    state = model.state_dict()
    state["visual.transformer.resblocks.1.mlp.c_fc.weight"][3, 5] = float("nan")
    torch.save(state, tmp_path / "nan.pt")
    cfg = sfp.compose(["backbone=custom", f"backbone.checkpoint={tmp_path / 'nan.pt'}", "backbone.head_width=64",
                       "backbone.layers.detect=0", "backbone.layers.ref=0", "backbone.layers.aux=0",
                       "backbone.layers.integrate=[0]", "tracker=none"])
    with pytest.raises(WeightsError,
                       match=r"tensor visual\.transformer\.resblocks\.1\.mlp\.c_fc\.weight holds 1 non-finite"):
        sfp.build_model(cfg, device="cpu")


def test_non_finite_features_stop_the_job_naming_the_stage_the_dataset_and_the_image(tmp_path):
    import torch

    entries = build_layout("voc21", tmp_path / "data", n=2)
    cfg = sfp.compose(tiny_overrides(tmp_path))
    model = sfp.build_model(cfg, device="cpu")
    model.method.forward_features = lambda images: (torch.full((images.shape[0], 16, 32), float("nan")), {})
    segmenter = sfp.Segmenter(cfg, model=model)
    with pytest.raises(NumericalError, match=r"non-finite dense features .* in windows of image 0"):
        segmenter.predict(np.zeros((64, 64, 3), np.uint8))
    from sfp.evaluation import evaluate_dataset

    dataset = build_dataset(cfg.datasets["voc21"], "voc21")
    with pytest.raises(NumericalError, match=rf"dataset 'voc21', image .*{entries[0].name}"):
        evaluate_dataset(cfg, dataset, model, tmp_path / "out")
    allowed = sfp.Segmenter(sfp.compose(tiny_overrides(tmp_path) + ["inference.check_finite=false"]), model=model)
    assert allowed.predict(np.zeros((64, 64, 3), np.uint8)).shape == (64, 64)  # the documented way to let them through


@pytest.mark.parametrize("drop,expected", [
    ("transformer.resblocks.0.", r"text tower blocks are not numbered 0\.\.1: missing block\(s\) 0"),
    ("transformer.resblocks.1.mlp.c_proj.", r"text tower block 1 differs from block 0 in tensor\(s\) "
                                            r"transformer\.resblocks\.1\.mlp\.c_proj\.bias"),
    ("ln_final.", r"lacks tensor\(s\) ln_final\.weight, needed to infer the architecture"),
    ("logit_scale", r"does not match the architecture 'inferred': 1 missing tensor\(s\): logit_scale"),
])
def test_a_checkpoint_missing_tensors_is_refused_naming_them(tmp_path, drop, expected):
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg
    import torch

    model = CLIP(32, CLIPVisionCfg(layers=2, width=64, patch_size=16, image_size=64),
                 CLIPTextCfg(context_length=16, vocab_size=49408, width=64, heads=1, layers=2))
    state = {k: v for k, v in model.state_dict().items() if not k.startswith(drop)}
    torch.save(state, tmp_path / "part.pt")
    cfg = sfp.compose(["backbone=custom", f"backbone.checkpoint={tmp_path / 'part.pt'}", "tracker=none"])
    with pytest.raises(WeightsError, match=rf"part\.pt:? .*{expected}"):
        from sfp.backbones.loading import load_backbone

        load_backbone(cfg.backbone)


# ---- through the command line: exit code 2, the culprit named, no traceback, no complete record ---------------

def _break_split(root: Path) -> None:
    split = root / "data" / "VOCdevkit" / "VOC2012" / "ImageSets" / "Segmentation" / "val.txt"
    split.write_text(split.read_text() + split.read_text().split()[0] + "\n")


COMMAND_LINE_CASES = {
    "non-finite knob": ([], "enhancer.temperature=inf", None, r"enhancer\.temperature=inf is out of range"),
    "invalid WANDB_MODE": (["tracker=wandb"], "", {"WANDB_MODE": "bogus"}, r"WANDB_MODE='bogus' is not a W&B mode"),
    "image listed twice": ([], "", "split", r"val\.txt, lines 1 and 3: image .* is listed twice"),
    "side below a patch": ([], "datasets.voc21.short_side=8", None,
                           r"datasets\.voc21\.short_side=8 is out of range: expected an integer >= the backbone's "
                           r"patch size 16"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(COMMAND_LINE_CASES))
def test_bad_input_on_the_command_line_exits_2_naming_the_culprit_without_a_traceback(case, tmp_path):
    import re
    import subprocess
    import sys

    from tests.helpers import REPO

    extra, override, fault, expected = COMMAND_LINE_CASES[case]
    build_layout("voc21", tmp_path / "data", n=2)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SFP_")}
    if fault == "split":
        _break_split(tmp_path)
    elif fault:
        env.update(fault)
    args = [o for o in tiny_overrides(tmp_path) if not (extra and o == "tracker=none")] + extra + \
        ([override] if override else []) + [f"hydra.run.dir={tmp_path / 'run'}"]
    result = subprocess.run([sys.executable, "main.py", *args], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 2 and re.search(expected, output), output[-3000:]
    assert "Traceback" not in output
    record = tmp_path / "run" / "results.json"
    assert not record.exists() or '"status": "complete"' not in record.read_text()
