"""The embedded demo benchmark: scene generator, VOC layout writer, prepare."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from sfp.demo import scenes
from sfp.demo.benchmark import BenchmarkSettings, write_benchmark
from sfp.demo.assets import MANIFEST, demo_paths, prepare

TINY_SCENE = scenes.SceneSpec(height=48, width=64, min_size=0.2, max_size=0.35)
TINY_BENCH = BenchmarkSettings(num_train=3, num_val=4, scene=TINY_SCENE)


def _quiet(_msg: str) -> None:
    pass


# ----------------------------------------------------------------------------- scenes


def test_scenes_are_deterministic():
    a_img, a_lab = scenes.render_scene(5, 3, TINY_SCENE)
    b_img, b_lab = scenes.render_scene(5, 3, TINY_SCENE)
    assert a_img.dtype == np.uint8 and a_img.shape == (48, 64, 3)
    assert a_lab.dtype == np.uint8 and a_lab.shape == (48, 64)
    np.testing.assert_array_equal(a_img, b_img)
    np.testing.assert_array_equal(a_lab, b_lab)
    c_img, _ = scenes.render_scene(6, 3, TINY_SCENE)
    d_img, _ = scenes.render_scene(5, 4, TINY_SCENE)
    assert not np.array_equal(a_img, c_img)
    assert not np.array_equal(a_img, d_img)


def test_scene_labels_cover_every_class():
    seen = set()
    for i in range(40):
        _, lab = scenes.render_scene(0, i, TINY_SCENE)
        seen |= set(np.unique(lab).tolist())
    assert seen == set(range(scenes.NUM_CLASSES))


def test_every_painter_draws_its_class():
    spec = scenes.SceneSpec(height=64, width=64, min_objects=1, max_objects=1, min_size=0.3, max_size=0.3)
    for cls in range(1, scenes.NUM_CLASSES):
        _, lab = scenes.render_scene(0, cls, spec, classes=[cls])
        assert set(np.unique(lab).tolist()) <= {0, cls}
        assert (lab == cls).sum() > 50, scenes.CLASSES[cls]


def test_ignore_borders_marks_only_boundaries():
    lab = np.zeros((20, 20), np.uint8)
    lab[5:15, 5:15] = 3
    gt = scenes.ignore_borders(lab, width=1)
    assert gt[10, 10] == 3 and gt[0, 0] == 0
    assert gt[5, 10] == scenes.IGNORE_INDEX and gt[4, 10] == scenes.IGNORE_INDEX
    assert set(np.unique(gt).tolist()) == {0, 3, scenes.IGNORE_INDEX}


# ----------------------------------------------------------------------------- class names


def test_class_file_parses_and_matches_generator():
    lines = scenes.CLASS_FILE.read_text(encoding="utf-8").splitlines()
    assert all(line.strip() for line in lines), "no blank lines"
    synonyms = scenes.load_class_synonyms()
    assert len(synonyms) == scenes.NUM_CLASSES
    for names, primary in zip(synonyms, scenes.CLASSES):
        assert names and all(names), names
        assert names[0] == primary
    assert synonyms[0][0] == "background"


# ----------------------------------------------------------------------------- benchmark layout


def test_benchmark_layout(tmp_path):
    root = write_benchmark(tmp_path / "VOC2012", TINY_BENCH, log=_quiet)
    for split, n in (("train", 3), ("val", 4)):
        ids = (root / "ImageSets" / "Segmentation" / f"{split}.txt").read_text().split()
        assert len(ids) == n and len(set(ids)) == n
        for i in ids:
            jpg = Image.open(root / "JPEGImages" / f"{i}.jpg")
            assert jpg.mode == "RGB" and jpg.size == (64, 48)
            png = Image.open(root / "SegmentationClass" / f"{i}.png")
            assert png.mode == "P" and png.size == (64, 48)
            values = set(np.unique(np.array(png)).tolist())
            assert values <= set(range(scenes.NUM_CLASSES)) | {255}
    # the stored labels are the generator's, with the ignore band
    _, lab = scenes.render_scene(1, 0, TINY_SCENE)
    png = np.array(Image.open(root / "SegmentationClass" / "demo_val_0000.png"))
    keep = png != 255
    np.testing.assert_array_equal(png[keep], lab[keep])
    assert not list(root.rglob("*.tmp*"))


# ----------------------------------------------------------------------------- prepare


def test_prepare_is_idempotent(tmp_path):
    messages = []
    paths = prepare(tmp_path, benchmark=TINY_BENCH, log=messages.append)
    assert paths == demo_paths(tmp_path)
    assert paths.voc_root == tmp_path / "demo" / "VOCdevkit" / "VOC2012"
    assert (paths.voc_root / "ImageSets" / "Segmentation" / "val.txt").is_file()
    assert any("shipped model verified" in m for m in messages)
    assert "benchmark" in json.loads((paths.data_root / MANIFEST).read_text())
    jpg = next((paths.voc_root / "JPEGImages").iterdir())
    jpg_stamp = jpg.stat().st_mtime_ns

    messages.clear()
    prepare(tmp_path, benchmark=TINY_BENCH, log=messages.append)
    assert any("nothing to do" in m for m in messages)
    assert jpg.stat().st_mtime_ns == jpg_stamp

    # a missing file or other settings rebuild the benchmark
    jpg.unlink()
    prepare(tmp_path, benchmark=TINY_BENCH, log=_quiet)
    assert jpg.is_file()
    other = BenchmarkSettings(num_train=2, num_val=3, scene=TINY_SCENE)
    prepare(tmp_path, benchmark=other, log=_quiet)
    assert len((paths.voc_root / "ImageSets" / "Segmentation" / "val.txt").read_text().split()) == 3
    assert not list(tmp_path.rglob("*.tmp*"))


def test_cli_prepare_up_to_date(tmp_path, capsys, monkeypatch):
    import importlib

    prep = importlib.import_module("sfp.demo.assets")

    prepare(tmp_path, benchmark=TINY_BENCH, log=_quiet)
    monkeypatch.setattr(prep, "BenchmarkSettings", lambda: TINY_BENCH)
    from sfp.demo.__main__ import main

    assert main(["prepare", "--cache-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "nothing to do" in out and "sfp-demo-clip.safetensors" in out


# ----------------------------------------------------------------------------- reference points and figure


def test_patch_grid_oracle_is_exact_on_grid_aligned_labels_and_majority_elsewhere():
    from sfp.demo.reference import patch_grid_oracle

    label = np.zeros((32, 48), np.uint8)
    label[:16, 16:32] = 3  # exactly one 16 px cell
    np.testing.assert_array_equal(patch_grid_oracle(label, 9, short_side=32, max_long_side=2048, patch=16), label)
    label = np.zeros((32, 32), np.uint8)
    label[:10, :16] = 2  # 10 of 16 rows of the first cell: the majority
    label[16:20, 16:] = 5  # 4 of 16 rows: a minority
    label[0, 0] = 255  # ignore pixels never win
    oracle = patch_grid_oracle(label, 9, short_side=32, max_long_side=2048, patch=16)
    assert (oracle[:16, :16] == 2).all() and (oracle[16:, 16:] == 0).all()


def test_reference_scores_on_a_written_benchmark(tmp_path):
    import sfp
    from sfp.demo.reference import reference_scores

    prepare(tmp_path / "cache", benchmark=TINY_BENCH, log=_quiet)
    cfg = sfp.compose([f"paths.cache_dir={tmp_path / 'cache'}", "tracker=none", "datasets.demo.short_side=48"])
    scores = reference_scores(cfg)
    # all background: IoU of class 0 is its share of the (non-ignored) pixels, other classes 0
    from sfp.data.dataset import build_dataset

    data = build_dataset(cfg.datasets["demo"], "demo")
    labels = np.concatenate([data[i].label.ravel() for i in range(len(data))])
    labels = labels[labels != 255]
    present = len(np.unique(labels))
    expected = 100 * (labels == 0).mean() / present
    assert scores["all_background"] == pytest.approx(expected, rel=1e-6)
    assert expected < scores["patch_grid_oracle"] <= 100


def test_mask_figure_shows_every_image_and_method(tmp_path):
    from sfp.demo.figure import mask_figure

    from sfp.demo.figure import PALETTE

    images = [np.full((40, 60, 3), 100, np.uint8)] * 2
    labels = [np.zeros((40, 60), np.int64)] * 2
    ball = [np.ones((40, 60), np.int64)] * 2
    preds = {"clip": labels, "sfp": ball}
    path = mask_figure(images, labels, preds, ["background", "ball"], tmp_path / "f.png", scale=1.0)
    img = np.array(Image.open(path))
    assert img.shape[1] == 4 * (60 + 4) + 4 and img.shape[0] > 2 * 40
    # second row (y = 18 header + 4 pad + 40 + 4 + 20), column centres: image, ground truth, clip, sfp
    y = 18 + 4 + 44 + 20
    centre = [4 + c * 64 + 30 for c in range(4)]
    assert tuple(img[y, centre[0]]) == (100, 100, 100)
    assert tuple(img[y, centre[1]]) == tuple(PALETTE[0]) == tuple(img[y, centre[2]])
    assert tuple(img[y, centre[3]]) == tuple(PALETTE[1])
