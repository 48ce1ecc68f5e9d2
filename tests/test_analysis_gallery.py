"""The image gallery (analysis/gallery.py): per-image IoU differences of two runs, the images that gained and
lost most, and their panels (image, ground truth, both predictions) drawn pixel for pixel.

Four tiny-model runs on a 5-image VOC tree (one image entirely ignored) are made once for the module:
A = method=clip with saved predictions, B = method=sfp without, C = B's config with saved predictions (what
regenerating B must reproduce), D = method=clip on the first 3 images only (another image set).
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from analysis.gallery import (
    IGNORE_COLOUR, GalleryRow, add_images_parser, gallery_figure, gallery_panels, image_differences, run_images,
    top_and_bottom,
)
from sfp.data.palette import voc_palette
from sfp.errors import DataError, SFPError
from sfp.tracking.per_image import PerImageError
from tests.data_layouts_fixture import build_layout, layout_root, make_label, write_image, write_label
from tests.helpers import tiny_overrides

DATASET = "voc21"
EXTRA = "2009_000001"  # a fourth image with labels
BLANK = "2010_000002"  # every pixel ignored: it has no per-image IoU
PALETTE = np.array(voc_palette(), dtype=np.uint8).reshape(256, 3)
VOC21 = ["background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
         "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor"]


def _coloured(label: np.ndarray) -> np.ndarray:
    """The reference colouring: VOC palette, ignored pixels in the documented grey."""
    rgb = PALETTE[label.astype(np.int64)]
    rgb[label == 255] = IGNORE_COLOUR
    return rgb


def _read(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.array(image)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    import sfp

    tmp = tmp_path_factory.mktemp("gallery")
    build_layout(DATASET, tmp / "data", n=3)
    root = layout_root(DATASET, tmp / "data")
    write_image(root / "JPEGImages" / f"{EXTRA}.jpg", 3)
    write_label(root / "SegmentationClass" / f"{EXTRA}.png", make_label(21, 3), palette=True)
    write_image(root / "JPEGImages" / f"{BLANK}.jpg", 4)
    write_label(root / "SegmentationClass" / f"{BLANK}.png", np.full((20, 30), 255, np.uint8), palette=True)
    split = root / "ImageSets" / "Segmentation" / "val.txt"
    split.write_text(split.read_text() + f"{EXTRA}\n{BLANK}\n")
    base = tiny_overrides(tmp) + ["datasets.voc21.short_side=40"]
    extras = {"a": ["method=clip", "save_predictions=true"], "b": ["method=sfp"],
              "c": ["method=sfp", "save_predictions=true"], "d": ["method=clip", "datasets.voc21.max_images=3"]}
    for name, extra in extras.items():
        sfp.run_job(sfp.compose(base + extra), tmp / name)
    return {"root": root, "base": base, "tmp": tmp, **{name: tmp / name for name in extras}}


def _hand_iou(run_dir: Path):
    """Per image name, (mean over labelled classes of I/U in percent, classes), straight from the npz arrays."""
    with np.load(run_dir / "per_image" / f"{DATASET}.npz") as data:
        names, offsets, classes = list(data["names"]), data["offsets"], data["classes"]
        inter, union, labelled = data["intersection"], data["union"], data["labelled"]
    out = {}
    for i, name in enumerate(names):
        ratios = [inter[j] / union[j] for j in range(offsets[i], offsets[i + 1]) if labelled[j] > 0]
        out[str(name)] = (100.0 * sum(ratios) / len(ratios), len(ratios)) if ratios else (None, 0)
        assert all(0 <= classes[j] < 21 for j in range(offsets[i], offsets[i + 1]))
    return out


# --------------------------------------------------------------------------- per-image differences


def test_the_two_runs_differ(runs):
    a = _hand_iou(runs["a"])
    b = _hand_iou(runs["b"])
    assert any(a[n][0] != b[n][0] for n in a if a[n][1])
    names = sorted(p.name for p in (runs["a"] / "predictions" / DATASET).iterdir())
    assert any(not np.array_equal(_read(runs["a"] / "predictions" / DATASET / n),
                                  _read(runs["c"] / "predictions" / DATASET / n)) for n in names)
    assert not (runs["b"] / "predictions").exists()


def test_image_differences_equal_a_hand_computation(runs):
    frame = image_differences(runs["a"], runs["b"] / "results.json", DATASET)
    a, b = _hand_iou(runs["a"]), _hand_iou(runs["b"])
    assert list(frame.columns) == ["image", "iou_a", "iou_b", "delta", "classes"]
    # the entirely ignored image has no score; every other image is there once
    assert sorted(frame["image"]) == sorted(n for n in a if n != BLANK) and BLANK in a and a[BLANK][1] == 0
    for row in frame.itertuples(index=False):
        assert row.iou_a == pytest.approx(a[row.image][0], abs=1e-9)
        assert row.iou_b == pytest.approx(b[row.image][0], abs=1e-9)
        assert row.delta == pytest.approx(b[row.image][0] - a[row.image][0], abs=1e-9)
        assert row.classes == a[row.image][1] == b[row.image][1]
    assert list(frame["delta"]) == sorted(frame["delta"], reverse=True)
    # swapping the runs negates every delta and reverses the order (no ties here)
    swapped = image_differences(runs["b"], runs["a"], DATASET)
    assert len(set(frame["delta"])) == len(frame)
    assert list(swapped["image"]) == list(frame["image"])[::-1]
    assert np.allclose(swapped["delta"], -frame["delta"][::-1].to_numpy())


def test_runs_on_different_images_are_refused(runs):
    with pytest.raises(PerImageError, match=f"not evaluated on the same images.*({EXTRA}|{BLANK})"):
        image_differences(runs["a"], runs["d"], DATASET)
    with pytest.raises(SFPError, match="no per-image counts for 'voc20'"):
        image_differences(runs["a"], runs["b"], "voc20")


def test_top_and_bottom_do_not_overlap():
    frame = pd.DataFrame({"image": list("abcdef"), "iou_a": 0.0, "iou_b": 0.0,
                          "delta": [3.0, -5.0, 1.0, 0.0, -1.0, 7.0], "classes": 1})
    gains, losses = top_and_bottom(frame, 2)
    assert list(gains["image"]) == ["f", "a"] and list(losses["image"]) == ["b", "e"]
    gains, losses = top_and_bottom(frame.iloc[:3], 2)  # fewer than 2k images: gains first, no image twice
    assert list(gains["image"]) == ["a", "c"] and list(losses["image"]) == ["b"]
    gains, losses = top_and_bottom(frame.iloc[:1], 4)
    assert list(gains["image"]) == ["a"] and losses.empty
    with pytest.raises(ValueError, match="k must be a positive integer"):
        top_and_bottom(frame, 0)


# --------------------------------------------------------------------------- panels and figure


@pytest.fixture(scope="module")
def gallery(runs):
    frame = image_differences(runs["a"], runs["b"], DATASET)
    gains, losses = top_and_bottom(frame, 2)
    shown = pd.concat([gains, losses], ignore_index=True)
    rows = gallery_panels(runs["a"], runs["b"], DATASET, list(shown["image"]))
    return shown, rows


def test_panels_are_the_coloured_label_maps(runs, gallery):
    import sfp

    shown, rows = gallery
    assert [row.name for row in rows] == list(shown["image"]) and len(rows) == 4
    segmenter = sfp.Segmenter(sfp.compose(runs["base"] + ["method=sfp"]), dataset=DATASET)
    root = runs["root"]
    for row in rows:
        assert isinstance(row, GalleryRow) and row.sources == ("saved", "regenerated")
        image = _read(root / "JPEGImages" / f"{row.name}.jpg")
        label = _read(root / "SegmentationClass" / f"{row.name}.png")
        for panel in row:
            assert panel.dtype == np.uint8 and panel.shape == image.shape
        assert np.array_equal(row.image, image)
        assert np.array_equal(row.ground_truth, _coloured(label))
        assert (label == 255).any() and (row.ground_truth[label == 255] == IGNORE_COLOUR).all()
        saved_a = _read(runs["a"] / "predictions" / DATASET / f"{row.name}.png")
        assert np.array_equal(row.prediction_a, _coloured(saved_a))
        # B saved nothing: regenerated from its recorded config, as the inference API and a saving run give it
        assert np.array_equal(row.prediction_b, _coloured(segmenter.predict(image)))
        saved_c = _read(runs["c"] / "predictions" / DATASET / f"{row.name}.png")
        assert np.array_equal(row.prediction_b, _coloured(saved_c))
        assert np.array_equal(row.labels[2], saved_c)


def test_forced_regeneration_reproduces_saved_predictions(runs):
    [row] = gallery_panels(runs["c"], runs["a"], DATASET, [EXTRA], regenerate=True)
    assert row.sources == ("regenerated", "regenerated")
    assert np.array_equal(row.labels[1], _read(runs["c"] / "predictions" / DATASET / f"{EXTRA}.png"))
    assert np.array_equal(row.labels[2], _read(runs["a"] / "predictions" / DATASET / f"{EXTRA}.png"))


def test_missing_predictions_and_missing_data_are_named(runs, tmp_path):
    missing = runs["b"] / "predictions" / DATASET / f"{EXTRA}.png"
    with pytest.raises(DataError, match=f"run B .*{missing}"):
        gallery_panels(runs["a"], runs["b"], DATASET, [EXTRA], regenerate=False)
    with pytest.raises(DataError, match="has no image named 'nope'"):
        gallery_panels(runs["a"], runs["c"], DATASET, ["nope"])
    with pytest.raises(ValueError, match="regenerate must be"):
        gallery_panels(runs["a"], runs["c"], DATASET, [EXTRA], regenerate="yes")
    # a run whose recorded dataset folder is not on this machine
    moved = tmp_path / "moved"
    shutil.copytree(runs["a"], moved)
    record = json.loads((moved / "results.json").read_text())
    record["config"]["datasets"][DATASET]["root"] = str(tmp_path / "elsewhere")
    (moved / "results.json").write_text(json.dumps(record))
    with pytest.raises(DataError, match=f"cannot read the images of dataset 'voc21'.*{tmp_path / 'elsewhere'}"):
        gallery_panels(moved, runs["c"], DATASET, [EXTRA])


def test_figure_shows_exactly_the_panels(gallery):
    shown, rows = gallery
    deltas = list(shown["delta"])
    figure = gallery_figure(rows, ("A: clip", "B: sfp"), VOC21, deltas)
    axes = figure.axes
    assert len(axes) == 4 * len(rows)
    for r, row in enumerate(rows):
        for c, panel in enumerate(row.panels):
            picture = axes[4 * r + c].images[0]
            assert np.array_equal(np.asarray(picture.get_array()), panel)
            assert picture.get_interpolation() == "nearest"
        label = axes[4 * r].get_ylabel()
        assert label == f"{row.name}\nΔ {deltas[r]:+.2f}"
    assert [a.get_title() for a in axes[:4]] == ["image", "ground truth", "A: clip", "B: sfp"]
    present = sorted({int(v) for row in rows for label in row.labels for v in np.unique(label)} - {255})
    [legend] = figure.legends
    assert [t.get_text() for t in legend.get_texts()] == [VOC21[i] for i in present] + ["ignored"]
    colours = [tuple(np.round(np.array(h.get_facecolor()[:3]) * 255).astype(int)) for h in legend.legend_handles]
    assert colours == [tuple(PALETTE[i]) for i in present] + [IGNORE_COLOUR]


# --------------------------------------------------------------------------- command line


def _args(*argv):
    parser = argparse.ArgumentParser()
    add_images_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["images", *argv])


def test_cli_prints_the_lists_and_writes_the_figure(runs, tmp_path, capsys):
    out = tmp_path / "figs" / "gallery.png"
    assert run_images(_args("--runs", str(runs["a"]), str(runs["b"]), "--k", "2", "--out", str(out))) == 0
    printed = capsys.readouterr().out
    frame = image_differences(runs["a"], runs["b"], DATASET)
    gains, losses = top_and_bottom(frame, 2)
    assert "dataset voc21: 4 images" in printed and "largest gains" in printed and "largest losses" in printed
    for row in pd.concat([gains, losses]).itertuples():
        assert f"{row.image:<24}{row.iou_a:>8.2f}{row.iou_b:>8.2f}{row.delta:>+8.2f}" in printed
    for suffix, magic in ((".png", b"\x89PNG"), (".pdf", b"%PDF")):
        path = out.with_suffix(suffix)
        assert str(path) in printed and path.read_bytes().startswith(magic)


def test_cli_without_saved_predictions_names_the_missing_file(runs, tmp_path, capsys):
    code = run_images(_args("--runs", str(runs["a"]), str(runs["b"]), "--k", "1", "--no-regenerate",
                            "--out", str(tmp_path / "g")))
    assert code == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and str(runs["b"] / "predictions" / DATASET) in error
    assert not (tmp_path / "g.png").exists()
    assert run_images(_args("--runs", str(runs["a"]), str(runs["b"]), "--dataset", "voc20")) == 2
    assert "voc20" in capsys.readouterr().err
