"""The embedded demo: scene generator, VOC layout writer, tiny model config, training, prepare."""
from __future__ import annotations

import json

import numpy as np
import torch
from PIL import Image

from sfp.demo import scenes
from sfp.demo.benchmark import BenchmarkSettings, write_benchmark
from sfp.demo.assets import MANIFEST, demo_paths, prepare
from sfp.demo.train import CONFIG_PATH, MODEL_NAME, TrainSettings, create_model, train, visual_features

TINY_SCENE = scenes.SceneSpec(height=48, width=64, min_size=0.2, max_size=0.35)
TINY_BENCH = BenchmarkSettings(num_train=3, num_val=4, scene=TINY_SCENE)
TINY_TRAIN = TrainSettings(steps=2, batch_size=2, pool_size=4, warmup=1, text_draws=1)


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


# ----------------------------------------------------------------------------- model


def test_model_config_builds_with_open_clip():
    cfg = json.loads(CONFIG_PATH.read_text())
    assert cfg["vision_cfg"]["layers"] == 12 and cfg["vision_cfg"]["patch_size"] == 16
    assert cfg["text_cfg"]["vocab_size"] == 49408
    model = create_model()
    assert len(model.visual.transformer.resblocks) == 12
    assert model.visual.image_size == (224, 224)
    assert model.context_length == cfg["text_cfg"]["context_length"]
    import open_clip

    tokens = open_clip.get_tokenizer(MODEL_NAME)(["a photo of a ball."])
    assert tokens.shape == (1, cfg["text_cfg"]["context_length"])
    with torch.no_grad():
        image, dense_clip, dense_mc = visual_features(model.visual, torch.zeros(1, 3, 224, 224))
        assert image.shape == (1, cfg["embed_dim"])
        assert dense_clip.shape == dense_mc.shape == (1, 196, cfg["embed_dim"])
        torch.testing.assert_close(image, model.encode_image(torch.zeros(1, 3, 224, 224)))


def test_train_saves_loadable_checkpoint(tmp_path):
    path = train(tmp_path / "m.pt", TINY_TRAIN, log=_quiet)
    state = torch.load(path, weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    assert "visual.transformer.resblocks.11.attn.in_proj_weight" in state
    model = create_model(path)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, state[k])
    assert not list(tmp_path.glob("*.tmp*"))


# ----------------------------------------------------------------------------- prepare


def test_prepare_is_idempotent(tmp_path):
    messages = []
    paths = prepare(tmp_path, benchmark=TINY_BENCH, training=TINY_TRAIN, log=messages.append)
    assert paths == demo_paths(tmp_path)
    assert paths.voc_root == tmp_path / "demo" / "VOCdevkit" / "VOC2012"
    assert paths.checkpoint.is_file() and (paths.voc_root / "ImageSets" / "Segmentation" / "val.txt").is_file()
    manifest = json.loads((paths.data_root / MANIFEST).read_text())
    assert {"benchmark", "model"} <= set(manifest)
    stamp = paths.checkpoint.stat().st_mtime_ns
    jpg = next((paths.voc_root / "JPEGImages").iterdir())
    jpg_stamp = jpg.stat().st_mtime_ns

    messages.clear()
    prepare(tmp_path, benchmark=TINY_BENCH, training=TINY_TRAIN, log=messages.append)
    assert any("nothing to do" in m for m in messages)
    assert paths.checkpoint.stat().st_mtime_ns == stamp
    assert jpg.stat().st_mtime_ns == jpg_stamp

    # a missing file or other settings rebuild the affected part only
    jpg.unlink()
    messages.clear()
    prepare(tmp_path, benchmark=TINY_BENCH, training=TINY_TRAIN, log=messages.append)
    assert jpg.is_file()
    assert paths.checkpoint.stat().st_mtime_ns == stamp
    assert any("model up to date" in m for m in messages)

    other = TrainSettings(steps=1, batch_size=2, pool_size=2, warmup=1, text_draws=1)
    messages.clear()
    prepare(tmp_path, benchmark=TINY_BENCH, training=other, log=messages.append)
    assert any("benchmark up to date" in m for m in messages)
    assert json.loads((paths.data_root / MANIFEST).read_text())["model"]["settings"]["steps"] == 1


def test_cli_prepare_up_to_date(tmp_path, capsys, monkeypatch):
    import importlib

    prep = importlib.import_module("sfp.demo.assets")

    prepare(tmp_path, benchmark=TINY_BENCH, training=TINY_TRAIN, log=_quiet)
    monkeypatch.setattr(prep, "BenchmarkSettings", lambda: TINY_BENCH)
    monkeypatch.setattr(prep, "TrainSettings", lambda: TINY_TRAIN)
    from sfp.demo.__main__ import main

    assert main(["prepare", "--cache-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "nothing to do" in out and str(tmp_path / "demo" / "sfp-demo-vit.pt") in out
