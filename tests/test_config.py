"""Composition: every option of every group composes, bad values fail naming the key and what is allowed."""
from __future__ import annotations

import itertools
from pathlib import Path

import pytest

import sfp
from sfp.config.protocol import effective_protocol
from sfp.errors import ConfigError

CONF = Path(__file__).resolve().parents[1] / "conf"
SINGLE_GROUPS = ["backbone", "method", "mitigator", "enhancer", "integrator", "aggregation",
                 "inference", "stats", "tracker", "paths"]
REAL_DATASETS = ["voc21", "context60", "coco_object", "voc20", "context59", "coco_stuff", "cityscapes", "ade20k"]


def options(group):
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize("group,option", [(g, o) for g in SINGLE_GROUPS for o in options(g)])
def test_every_option_of_every_group_composes(group, option):
    extra = ["backbone.checkpoint=/weights.pt"] if (group, option) == ("backbone", "custom") else []
    cfg = sfp.compose([f"{group}={option}", *extra])
    assert getattr(cfg, group) is not None


def test_every_dataset_composes_and_all_together():
    assert sorted(options("datasets")) == sorted(REAL_DATASETS + ["benchmarks", "demo"])
    cfg = sfp.compose([f"datasets=[{','.join(reversed(REAL_DATASETS))}]"])
    assert list(cfg.datasets) == list(reversed(REAL_DATASETS))  # the order given is the evaluation order


def test_the_benchmarks_option_is_the_eight_benchmarks_in_paper_order():
    assert list(sfp.compose(["datasets=benchmarks"]).datasets) == REAL_DATASETS


@pytest.mark.parametrize("switches", list(itertools.product(["on", "off"], repeat=4)))
def test_every_on_off_combination_composes(switches):
    names = ["mitigator", "enhancer", "integrator", "aggregation"]
    cfg = sfp.compose([f"{n}={s}" for n, s in zip(names, switches)])
    assert [getattr(cfg, n).enabled for n in names] == [s == "on" for s in switches]


def test_defaults_are_the_documented_protocol():
    cfg = sfp.compose(["backbone=vit_b16", "datasets=[voc21,coco_object,ade20k,cityscapes]"])
    assert (cfg.inference.crop, cfg.inference.stride, cfg.inference.templates) == (224, 112, "imagenet80")
    assert cfg.inference.precision.value == "float32"
    voc = effective_protocol(cfg, "voc21")
    assert (voc.short_side, voc.logit_scale, voc.prob_thd, voc.area_thd) == (336, 50.0, 0.15, 0.1)
    coco = effective_protocol(cfg, "coco_object")
    assert (coco.logit_scale, coco.prob_thd) == (55.0, 0.35)
    assert effective_protocol(cfg, "ade20k").short_side == 384
    assert effective_protocol(cfg, "cityscapes").short_side == 560
    assert (cfg.mitigator.top_k, cfg.mitigator.cls_scale, cfg.enhancer.temperature, cfg.aggregation.beta) == \
        (10, 1.5, 3.0, 0.4)


def test_vit_l14_overrides_the_background_thresholds():
    cfg = sfp.compose(["backbone=vit_l14", "datasets=[voc21,coco_object,context60]"])
    assert effective_protocol(cfg, "voc21").prob_thd == 0.2
    assert effective_protocol(cfg, "coco_object").prob_thd == 0.25
    assert effective_protocol(cfg, "context60").prob_thd == 0.15  # no override: the dataset's value


def test_unknown_key_fails_naming_it():
    with pytest.raises(ConfigError, match="inference.strid"):
        sfp.compose(["inference.strid=3"])


def test_wrong_type_fails_naming_key_and_value():
    with pytest.raises(ConfigError, match=r"mitigator.top_k[\s\S]*'abc'|'abc'[\s\S]*mitigator.top_k"):
        sfp.compose(["mitigator.top_k=abc"])


def test_bad_enum_value_lists_the_allowed_values():
    with pytest.raises(ConfigError, match=r"float32, float16, bfloat16"):
        sfp.compose(["inference.precision=float8"])
    with pytest.raises(ConfigError, match=r"som, l2, lof"):
        sfp.compose(["mitigator.detector=knn"])


@pytest.mark.parametrize("override,key,expected", [
    ("inference.stride=0", "inference.stride", r"\[1, inference.crop=224\]"),
    ("inference.stride=300", "inference.stride", r"\[1, inference.crop=224\]"),
    ("datasets.demo.prob_thd=1.5", "datasets.demo.prob_thd", r"\[0, 1\]"),
    ("aggregation.beta=2", "aggregation.beta", r"\[-1, 1\]"),
    ("mitigator.top_k=0", "mitigator.top_k", ">= 1"),
    ("enhancer.temperature=-1", "enhancer.temperature", "> 0"),
    ("inference.templates=nope", "inference.templates", "imagenet80"),
    ("mitigator.lof_contamination=1.5", "mitigator.lof_contamination", r"\(0, 1\)"),
    ("integrator.extend=-1", "integrator.extend", ">= 0"),
    ("method=naclip method.sigma=0", "method.sigma", "> 0"),
    ("method.name=nope", "method.name", "clip, cliper, maskclip"),
])
def test_out_of_range_values_fail_naming_key_and_range(override, key, expected):
    with pytest.raises(ConfigError, match=expected) as info:
        sfp.compose(override.split())
    assert key in str(info.value)


def test_unknown_group_option_lists_the_options():
    with pytest.raises(ConfigError, match=r"Available options in 'mitigator'"):
        sfp.compose(["mitigator=maybe"])


def test_custom_backbone_requires_a_checkpoint():
    with pytest.raises(ConfigError, match="backbone.checkpoint"):
        sfp.compose(["backbone=custom"])


def test_paths_hold_no_personal_locations():
    for path in CONF.rglob("*.yaml"):
        text = path.read_text()
        assert "/home/" not in text and "/Users/" not in text and "/root/" not in text, path


def test_an_unknown_top_level_key_added_with_plus_is_refused():
    with pytest.raises(ConfigError, match=r"unknown top-level key\(s\) \['foo'\]"):
        sfp.compose(["+foo=1"])
