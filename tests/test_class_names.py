"""Specification of the class-name files: the SFP query wording, one class per line, synonyms
comma-separated, hashed so every result records exactly which wording it used."""
from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import pytest

from sfp.data import ClassNames, file_sha256, load_class_names
from sfp.data.class_names import CLASS_NAMES_DIR, packaged_class_names
from sfp.errors import DataError

STUFF = ("sky", "wall", "tree", "wood", "grass", "road", "sea", "river", "mountain", "sands", "desk", "bed",
         "building", "cloud", "lamp", "door", "window", "wardrobe", "ceiling", "shelf", "curtain", "stair",
         "floor", "hill", "rail", "fence")
COUNTS = {"voc21": 21, "voc20": 20, "context60": 60, "context59": 59, "coco_object": 81,
          "coco_stuff": 171, "cityscapes": 19, "ade20k": 150}


@pytest.mark.parametrize("key,count", sorted(COUNTS.items()))
def test_class_counts(key, count):
    names = load_class_names(key)
    assert names.num_classes == count == len(names.display_names)
    assert len(set(names.display_names)) == count, "display names must be unique"
    assert Path(names.path) == CLASS_NAMES_DIR / f"{key}.txt"


def test_all_benchmark_files_are_packaged():
    assert set(COUNTS) <= set(packaged_class_names())


def test_voc21_wording():
    names = load_class_names("voc21")
    assert names.synonyms[0] == STUFF
    assert names.display_names[1:] == [
        "aeroplane", "bicycle", "bird", "ship", "bottle", "bus", "car", "cat", "chair", "cow", "table", "dog",
        "horse", "motorbike", "people", "pottedplant", "sheep", "sofa", "train", "television monitor"]
    assert names.synonyms[15] == ("people", "people in shirt", "people in jeans", "people in dress",
                                  "people in sweater", "people in skirt", "people in jacket")
    assert names.synonyms[20] == ("television monitor", "tv monitor", "monitor", "television", "screen")


def test_voc20_is_voc21_without_background():
    assert load_class_names("voc20").synonyms == load_class_names("voc21").synonyms[1:]


def test_context_files():
    c60, c59 = load_class_names("context60"), load_class_names("context59")
    assert c60.synonyms[0] == ("background",)
    assert c59.synonyms == c60.synonyms[1:]
    assert c59.display_names == sorted(c59.display_names)
    assert c59.display_names[:5] == ["aeroplane", "bag", "bed", "bedclothes", "bench"]
    assert c59.display_names[-2:] == ["window", "wood"]


def test_coco_object_wording():
    obj, stuff = load_class_names("coco_object"), load_class_names("coco_stuff")
    assert obj.synonyms[0] == STUFF
    assert obj.synonyms[1] == ("person", "person in shirt", "person in jeans", "person in dress",
                               "person in sweater", "person in skirt", "person in jacket", "body")
    # The 79 other things follow in the standard COCO order, as in COCO-Stuff's first 80 classes.
    assert obj.display_names[2:] == stuff.display_names[1:80]
    assert obj.display_names[-2:] == ["hair drier", "toothbrush"]


def test_coco_stuff_and_ade20k_have_no_synonyms():
    for key in ("coco_stuff", "ade20k", "cityscapes", "context59"):
        assert all(len(s) == 1 for s in load_class_names(key).synonyms), key
    stuff = load_class_names("coco_stuff").display_names
    assert stuff[:3] == ["person", "bicycle", "car"] and stuff[79] == "toothbrush"
    assert stuff[80:85] == ["banner", "blanket", "branch", "bridge", "building-other"] and stuff[-1] == "wood"
    ade = load_class_names("ade20k").display_names
    assert ade[:5] == ["wall", "building", "sky", "floor", "tree"] and ade[-2:] == ["clock", "flag"]


def test_cityscapes_wording():
    assert load_class_names("cityscapes").display_names == [
        "road", "sidewalk", "building", "wall", "fence", "pole", "trafficlight", "trafficsign", "vegetation",
        "terrain", "sky", "people", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle"]


def test_synonyms_are_split_and_stripped(tmp_path):
    p = tmp_path / "mine.txt"
    p.write_text("background ,  sky,wall\ncat\n  big dog , puppy \n")
    names = load_class_names(str(p))
    assert names.synonyms == (("background", "sky", "wall"), ("cat",), ("big dog", "puppy"))
    assert names.display_names == ["background", "cat", "big dog"]
    assert names.num_classes == 3
    assert names.path == str(p)


def test_spec_as_path_object_and_without_txt_suffix(tmp_path):
    p = tmp_path / "classes.txt"
    p.write_text("a\nb\n")
    assert load_class_names(p).num_classes == 2
    q = tmp_path / "classes_list"
    q.write_text("a\n")
    assert load_class_names(str(q)).num_classes == 1


def test_sha256_is_of_the_file_bytes_and_stable(tmp_path):
    names = load_class_names("voc21")
    raw = (CLASS_NAMES_DIR / "voc21.txt").read_bytes()
    assert names.sha256 == hashlib.sha256(raw).hexdigest() == file_sha256(names.path)
    assert load_class_names("voc21").sha256 == names.sha256
    p = tmp_path / "voc21.txt"
    p.write_bytes(raw + b"extra\n")
    assert load_class_names(str(p)).sha256 != names.sha256


def test_class_names_are_frozen():
    names = load_class_names("voc20")
    assert isinstance(names, ClassNames)
    with pytest.raises(dataclasses.FrozenInstanceError):
        names.path = "x"


def test_empty_line_is_an_error_with_file_and_line(tmp_path):
    p = tmp_path / "bad.txt"
    p.write_text("cat\n\ndog\n")
    with pytest.raises(DataError, match="line 2") as e:
        load_class_names(str(p))
    assert str(p) in str(e.value)


def test_empty_synonym_is_an_error_with_file_and_line(tmp_path):
    p = tmp_path / "bad.txt"
    p.write_text("cat\ndog,,puppy\n")
    with pytest.raises(DataError, match="line 2: empty synonym") as e:
        load_class_names(str(p))
    assert str(p) in str(e.value)
    p.write_text("cat, \n")
    with pytest.raises(DataError, match="line 1"):
        load_class_names(str(p))


def test_empty_file_is_an_error(tmp_path):
    p = tmp_path / "empty.txt"
    p.write_text("")
    with pytest.raises(DataError, match="no classes"):
        load_class_names(str(p))


def test_missing_packaged_name_lists_the_packaged_files():
    with pytest.raises(DataError) as e:
        load_class_names("voc22")
    msg = str(e.value)
    assert str(CLASS_NAMES_DIR / "voc22.txt") in msg and "voc21" in msg and "ade20k" in msg


def test_missing_path_names_it(tmp_path):
    p = tmp_path / "nowhere" / "classes.txt"
    with pytest.raises(DataError) as e:
        load_class_names(str(p))
    assert str(p) in str(e.value)
