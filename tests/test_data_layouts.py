"""Specification of the benchmark datasets: each layout reads a tiny copy of its real on-disk tree,
maps labels as the protocol says, and every data problem is a DataError naming the file at fault."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image

from sfp.config.schema import DatasetConfig
from sfp.data import LAYOUTS, Sample, SegmentationDataset, build_dataset
from sfp.data.dataset import reduce_zero_label
from sfp.errors import ConfigError, DataError

from tests.data_layouts_fixture import (
    KEYS, build_layout, conf_values, expected_label, layout_root, load_conf, write_image, write_label,
)

NUM_CLASSES = {
    "voc21": 21, "voc20": 20, "context60": 60, "context59": 59,
    "coco_object": 81, "coco_stuff": 171, "cityscapes": 19, "ade20k": 150,
}


def build(key, data_root, **overrides):
    cfg = load_conf(key, data_root)
    for k, v in overrides.items():
        setattr(cfg, k, v)
    return build_dataset(cfg, key)


# ---------------------------------------------------------------- every benchmark layout


@pytest.mark.parametrize("key", KEYS)
def test_layout_reads_its_tiny_copy(key, tmp_path):
    entries = build_layout(key, tmp_path)
    ds = build(key, tmp_path)

    assert isinstance(ds, SegmentationDataset)
    assert ds.key == key
    assert ds.root == layout_root(key, tmp_path)
    assert ds.num_classes == ds.class_names.num_classes == NUM_CLASSES[key]
    assert len(ds) == len(entries) == 3
    assert ds.names == [e.name for e in entries]
    for i, e in enumerate(entries):
        s = ds[i]
        assert isinstance(s, Sample)
        assert s.name == e.name
        assert s.image_path == str(e.image_path)
        assert s.image.dtype == np.uint8 and s.image.shape == (20, 30, 3)
        assert s.label.dtype == np.int64 and s.label.shape == (20, 30)
        np.testing.assert_array_equal(s.label, expected_label(key, e.raw_label))
        valid = s.label[s.label != 255]
        assert valid.min() >= 0 and valid.max() < NUM_CLASSES[key]


@pytest.mark.parametrize("key", KEYS)
def test_max_images_keeps_the_first_n(key, tmp_path):
    entries = build_layout(key, tmp_path)
    ds = build(key, tmp_path, max_images=2)
    assert ds.names == [e.name for e in entries[:2]]
    assert build(key, tmp_path, max_images=100).names == [e.name for e in entries]


def test_max_images_below_one_is_rejected(tmp_path):
    build_layout("voc21", tmp_path)
    with pytest.raises(ConfigError, match="max_images"):
        build("voc21", tmp_path, max_images=0)


def test_split_file_order_is_dataset_order_and_other_images_are_ignored(tmp_path):
    build_layout("voc21", tmp_path)
    assert build("voc21", tmp_path).names == ["2008_000009", "2007_000033", "2008_000123"]


def test_folder_layouts_sort_by_name(tmp_path):
    build_layout("coco_stuff", tmp_path)
    build_layout("ade20k", tmp_path)
    build_layout("cityscapes", tmp_path)
    assert build("coco_stuff", tmp_path).names == ["000000000139", "000000000285", "000000000632"]
    assert build("ade20k", tmp_path).names == ["ADE_val_00000001", "ADE_val_00000002", "ADE_val_00000003"]
    assert build("cityscapes", tmp_path).names == [
        "frankfurt_000000_000294_leftImg8bit",
        "frankfurt_000001_000538_leftImg8bit",
        "lindau_000000_000019_leftImg8bit",
    ]


def test_voc_palette_labels_are_read_as_indices(tmp_path):
    entries = build_layout("voc21", tmp_path)
    with Image.open(entries[0].label_path) as img:
        assert img.mode == "P"
    np.testing.assert_array_equal(build("voc21", tmp_path)[0].label, entries[0].raw_label)


def test_coco_object_and_coco_stuff_read_their_own_label_files(tmp_path):
    build_layout("coco_object", tmp_path)
    build_layout("coco_stuff", tmp_path)
    obj, stuff = build("coco_object", tmp_path)[0], build("coco_stuff", tmp_path)[0]
    assert obj.name == stuff.name
    assert stuff.label.max() > 80 >= obj.label[obj.label != 255].max()


def test_ade20k_train_split_maps_to_training_folder(tmp_path):
    root = layout_root("ade20k", tmp_path)
    write_image(root / "images/training/ADE_train_00000001.jpg", 0)
    write_label(root / "annotations/training/ADE_train_00000001.png", np.ones((20, 30), np.uint8))
    ds = build("ade20k", tmp_path, split="train")
    assert ds.names == ["ADE_train_00000001"]
    assert (ds[0].label == 0).all()


# ---------------------------------------------------------------- label mapping


def test_reduce_zero_label_exact_values():
    raw = np.array([[0, 1, 2], [150, 255, 0]], dtype=np.uint8)
    np.testing.assert_array_equal(reduce_zero_label(raw), [[255, 0, 1], [149, 255, 255]])
    assert reduce_zero_label(raw).dtype == np.int64


@pytest.mark.parametrize("key", ["voc20", "context59", "ade20k"])
def test_reduce_zero_label_through_the_dataset(key, tmp_path):
    entries = build_layout(key, tmp_path, n=1)
    raw = np.zeros((20, 30), np.uint8)
    raw[0, :4] = [0, 1, 2, 255]
    raw[1, :2] = [NUM_CLASSES[key], 7]
    write_label(entries[0].label_path, raw, palette=key == "voc20")
    label = build(key, tmp_path)[0].label
    assert list(label[0, :4]) == [255, 0, 1, 255]
    assert list(label[1, :2]) == [NUM_CLASSES[key] - 1, 6]
    assert (label[2:] == 255).all()


def test_without_reduce_zero_label_values_pass_unchanged(tmp_path):
    entries = build_layout("voc21", tmp_path, n=1)
    raw = np.zeros((20, 30), np.uint8)
    raw[0, :3] = [1, 20, 255]
    write_label(entries[0].label_path, raw, palette=True)
    label = build("voc21", tmp_path)[0].label
    assert list(label[0, :3]) == [1, 20, 255] and label[1, 0] == 0


# ---------------------------------------------------------------- errors name the file at fault


def test_missing_root(tmp_path):
    root = layout_root("voc21", tmp_path)
    with pytest.raises(DataError) as e:
        build("voc21", tmp_path)
    msg = str(e.value)
    assert "dataset 'voc21'" in msg and f"root folder not found: {root}" in msg
    assert "paths.data_root" in msg and "JPEGImages" in msg


def test_missing_split_file(tmp_path):
    build_layout("context60", tmp_path)
    split_file = layout_root("context60", tmp_path) / "ImageSets/SegmentationContext/val.txt"
    split_file.unlink()
    with pytest.raises(DataError, match="split file not found") as e:
        build("context60", tmp_path)
    assert str(split_file) in str(e.value)


def test_missing_image_folder_of_a_scanned_layout(tmp_path):
    layout_root("coco_stuff", tmp_path).mkdir(parents=True)
    with pytest.raises(DataError) as e:
        build("coco_stuff", tmp_path)
    assert str(layout_root("coco_stuff", tmp_path) / "images/val2017") in str(e.value)


@pytest.mark.parametrize("key", KEYS)
def test_missing_label_file_is_found_at_construction(key, tmp_path):
    entries = build_layout(key, tmp_path)
    entries[1].label_path.unlink()
    entries[2].label_path.unlink()
    with pytest.raises(DataError) as e:
        build(key, tmp_path)
    msg = str(e.value)
    assert f"first missing: {entries[1].label_path}" in msg and "2 image/label file(s) missing" in msg


def test_missing_image_listed_in_split_file(tmp_path):
    entries = build_layout("voc20", tmp_path)
    entries[2].image_path.unlink()
    with pytest.raises(DataError) as e:
        build("voc20", tmp_path)
    assert str(entries[2].image_path) in str(e.value)


def test_corrupt_image_names_the_file_at_load_time(tmp_path):
    entries = build_layout("coco_stuff", tmp_path)
    entries[1].image_path.write_bytes(b"not a jpeg")
    ds = build("coco_stuff", tmp_path)  # construction only checks existence
    ds[0]
    with pytest.raises(DataError, match="cannot read image") as e:
        ds[1]
    assert str(entries[1].image_path) in str(e.value)


def test_corrupt_label_names_the_file(tmp_path):
    entries = build_layout("cityscapes", tmp_path)
    entries[0].label_path.write_bytes(b"\x89PNG broken")
    with pytest.raises(DataError, match="cannot read label map") as e:
        build("cityscapes", tmp_path)[0]
    assert str(entries[0].label_path) in str(e.value)


def test_rgb_label_map_is_rejected(tmp_path):
    entries = build_layout("voc21", tmp_path, n=1)
    Image.new("RGB", (30, 20)).save(entries[0].label_path)
    with pytest.raises(DataError, match="mode RGB") as e:
        build("voc21", tmp_path)[0]
    assert str(entries[0].label_path) in str(e.value)


def test_label_size_mismatch_names_both_files(tmp_path):
    entries = build_layout("ade20k", tmp_path)
    write_label(entries[0].label_path, np.ones((21, 30), np.uint8))
    with pytest.raises(DataError) as e:
        build("ade20k", tmp_path)[0]
    msg = str(e.value)
    assert str(entries[0].label_path) in msg and str(entries[0].image_path) in msg
    assert "30x21" in msg and "30x20" in msg


def test_out_of_range_label_names_file_value_and_range(tmp_path):
    entries = build_layout("cityscapes", tmp_path)
    raw = entries[0].raw_label.copy()
    raw[5, 5], raw[6, 6] = 19, 33
    write_label(entries[0].label_path, raw)
    with pytest.raises(DataError) as e:
        build("cityscapes", tmp_path)[0]
    msg = str(e.value)
    assert str(entries[0].label_path) in msg and "19, 33" in msg and "[0, 19)" in msg


def test_out_of_range_after_reduce_zero_label(tmp_path):
    entries = build_layout("ade20k", tmp_path, n=1)
    raw = entries[0].raw_label.copy()
    raw[3, 3] = 151  # -> 150 after mapping, one past the last class
    write_label(entries[0].label_path, raw)
    with pytest.raises(DataError) as e:
        build("ade20k", tmp_path)[0]
    msg = str(e.value)
    assert str(entries[0].label_path) in msg and "150" in msg and "151" in msg and "[0, 150)" in msg


def test_unknown_layout_and_unset_root(tmp_path):
    cfg = DatasetConfig(layout="pascal", root=str(tmp_path), class_names="voc21")
    with pytest.raises(ConfigError, match="unknown layout 'pascal'"):
        build_dataset(cfg, "x")
    with pytest.raises(ConfigError, match="root"):
        build_dataset(DatasetConfig(class_names="voc21"), "x")


def test_missing_class_names_file(tmp_path):
    build_layout("voc21", tmp_path)
    with pytest.raises(DataError, match="nope"):
        build("voc21", tmp_path, class_names="nope")


# ---------------------------------------------------------------- configs and registry


def test_plain_dataclass_config_works(tmp_path):
    build_layout("voc20", tmp_path)
    root = str(layout_root("voc20", tmp_path))
    cfg = DatasetConfig(layout="voc", root=root, class_names="voc20", reduce_zero_label=True, max_images=1)
    ds = build_dataset(cfg)
    assert len(ds) == 1 and ds.num_classes == 20


@pytest.mark.parametrize("name", LAYOUTS.names())
def test_every_registered_layout_is_named_by_its_registry_key(name):
    assert LAYOUTS.get(name).name == name


PROTOCOL = {  # key: (layout, subdir, reduce_zero_label, short_side, logit_scale, prob_thd, area_thd)
    "voc21": ("voc", "VOCdevkit/VOC2012", False, 336, 50.0, 0.15, 0.1),
    "voc20": ("voc", "VOCdevkit/VOC2012", True, 336, 40.0, 0.0, 0.0),
    "context60": ("context", "VOCdevkit/VOC2010", False, 336, 40.0, 0.15, 0.0),
    "context59": ("context", "VOCdevkit/VOC2010", True, 336, 40.0, 0.0, 0.0),
    "coco_object": ("coco_object", "coco_stuff164k", False, 336, 55.0, 0.35, 0.0),
    "coco_stuff": ("coco_stuff", "coco_stuff164k", False, 336, 40.0, 0.0, 0.0),
    "cityscapes": ("cityscapes", "cityscapes", False, 560, 40.0, 0.0, 0.0),
    "ade20k": ("ade20k", "ADEChallengeData2016", True, 384, 40.0, 0.0, 0.0),
}


@pytest.mark.parametrize("key", KEYS)
def test_conf_file_holds_the_protocol_values(key):
    layout, sub, rzl, short, scale, prob, area = PROTOCOL[key]
    values = conf_values(key)
    assert set(values) <= {f.name for f in dataclasses.fields(DatasetConfig)} - {"max_images"}
    assert values["root"] == "${paths.data_root}/" + sub
    cfg = load_conf(key, Path("/data"))
    assert cfg.layout == layout and cfg.split == "val" and cfg.class_names == key
    assert cfg.root == f"/data/{sub}"
    assert (cfg.reduce_zero_label, cfg.short_side, cfg.logit_scale, cfg.prob_thd, cfg.area_thd) == (
        rzl, short, scale, prob, area)
    assert OmegaConf.is_missing(cfg, "max_images") is False and cfg.max_images is None
