"""Is a difference real? Paired bootstrap intervals over images, in `compare` and in every table with a Δ."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from analysis import components_table, load_runs, main_table, render, sweep_table
from analysis.cli import main as analysis_main
from analysis.intervals import BootstrapSettings, compare_runs, compare_tables, point_miou
from sfp.errors import SFPError
from sfp.tracking.per_image import PerImageAreas, PerImageError, load_for_record
from sfp.tracking.results_store import read_results, write_json_atomic

TINY_AS_B16 = {"tiny": "ViT-B/16"}


def _table(intersection: np.ndarray, union: np.ndarray) -> PerImageAreas:
    """Per-image counts of N images and C classes (predicted = union, labelled = intersection: any split works)."""
    n = len(intersection)
    areas = np.stack([intersection, union, union, intersection], axis=1)
    return PerImageAreas([f"image{i:03d}" for i in range(n)], areas, intersection.sum(axis=1),
                         [f"class{c}" for c in range(intersection.shape[1])])


@pytest.fixture(scope="module")
def base():
    rng = np.random.default_rng(1)
    union = rng.integers(200, 400, (80, 6))
    intersection = (union * rng.uniform(0.2, 0.7, union.shape)).astype(np.int64)
    return intersection, union


# --------------------------------------------------------------------------- the method on constructed cases


def test_identical_runs_give_a_zero_width_interval_at_zero(base):
    run = _table(*base)
    result = compare_tables(run, run, "d")
    assert result.delta == 0.0 and (result.lo, result.hi) == (0.0, 0.0) and not result.significant
    assert result.miou_a_lo < result.miou_a < result.miou_a_hi  # each run's own interval has a width


def test_a_gain_planted_in_every_image_gives_an_interval_that_excludes_zero(base):
    intersection, union = base
    better = np.minimum(union, intersection + union // 20)  # +5 % of each union, in every image
    result = compare_tables(_table(intersection, union), _table(better, union), "d")
    assert result.delta > 0 and result.lo > 0 and result.significant
    assert result.lo <= result.delta <= result.hi


def test_a_tiny_noisy_difference_gives_an_interval_that_includes_zero(base):
    intersection, union = base
    rng = np.random.default_rng(2)
    noisy = np.clip(intersection + rng.integers(-3, 4, intersection.shape), 0, union)  # +-3 pixels, no direction
    result = compare_tables(_table(intersection, union), _table(noisy, union), "d")
    assert result.lo < 0 < result.hi and not result.significant


def test_the_interval_recomputes_miou_from_summed_counts_not_from_per_image_ious():
    # image 0 is large and good, image 1 tiny and bad: per-image IoUs average 49.5 %, the metric is 990 / 1010
    intersection = np.array([[990], [0]])
    union = np.array([[1000], [10]])
    table = _table(intersection, union)
    assert point_miou(table) == pytest.approx(100 * 990 / 1010)
    result = compare_tables(table, table, "d", BootstrapSettings(resamples=400))
    assert result.miou_a_hi == pytest.approx(99.0)  # a resample of image 0 alone gives 99, never 100


def test_resampling_is_seeded_and_the_settings_are_validated(base):
    a, b = _table(*base), _table(np.minimum(base[1], base[0] + 3), base[1])
    first = compare_tables(a, b, "d", BootstrapSettings(resamples=300, seed=5))
    again = compare_tables(a, b, "d", BootstrapSettings(resamples=300, seed=5))
    other = compare_tables(a, b, "d", BootstrapSettings(resamples=300, seed=6))
    assert (first.lo, first.hi) == (again.lo, again.hi) != (other.lo, other.hi)
    wider = compare_tables(a, b, "d", BootstrapSettings(resamples=300, seed=5, level=0.99))
    assert wider.lo < first.lo and wider.hi > first.hi
    for bad in ({"resamples": 0}, {"level": 1.0}, {"level": 0}, {"seed": -1}):
        with pytest.raises(ValueError):
            BootstrapSettings(**bad)


def test_runs_on_different_images_are_refused_naming_an_image(base):
    a = _table(*base)
    b = a.select(a.names[:-1])
    with pytest.raises(PerImageError, match="image079"):
        compare_tables(a, b, "d")


# --------------------------------------------------------------------------- compare on real runs


def test_compare_prints_one_json_object_per_dataset_with_the_records_miou(analysis_runs, capsys):
    a, b = analysis_runs / "presets" / "clip", analysis_runs / "presets" / "naclip"
    assert analysis_main(["compare", str(a), str(b), "--json", "--resamples", "200", "--seed", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    objects = [json.loads(line) for line in lines]
    assert [o["dataset"] for o in objects] == ["voc21", "ade20k"]
    record_a, record_b = read_results(a / "results.json"), read_results(b / "results.json")
    for o in objects:
        assert {"dataset", "miou_a", "miou_b", "delta", "lo", "hi", "level", "resamples", "n_images"} <= set(o)
        assert o["miou_a"] == record_a["metrics"][o["dataset"]]["miou"]  # the same number as the metric, exactly
        assert o["miou_b"] == record_b["metrics"][o["dataset"]]["miou"]
        assert o["delta"] == pytest.approx(o["miou_b"] - o["miou_a"])
        assert (o["level"], o["resamples"], o["n_images"]) == (0.95, 200, 3)
        assert o["lo"] <= o["delta"] <= o["hi"]
    assert analysis_main(["compare", str(a), str(b), "--dataset", "ade20k", "--json", "--resamples", "50"]) == 0
    assert [json.loads(line)["dataset"] for line in capsys.readouterr().out.splitlines()] == ["ade20k"]
    assert analysis_main(["compare", str(a), str(b), "--resamples", "50"]) == 0
    assert "| voc21 | 3 |" in capsys.readouterr().out


def test_compare_refuses_runs_of_other_images_or_other_class_files(analysis_runs, tmp_path, capsys):
    a = analysis_runs / "presets" / "clip"
    b = tmp_path / "b"
    shutil.copytree(analysis_runs / "presets" / "naclip", b)
    record = read_results(b / "results.json")
    table = load_for_record(b, record, "voc21")
    fewer = table.select(table.names[1:])  # as if evaluated with max_images
    from sfp.tracking.per_image import record_entry

    record["per_image"]["voc21"] = record_entry(b, "voc21", fewer)
    record["areas"]["voc21"] = dict(zip(("intersection", "union", "predicted", "labelled"), fewer.total().tolist()))
    write_json_atomic(b / "results.json", record)
    assert analysis_main(["compare", str(a), str(b), "--dataset", "voc21"]) == 2
    error = capsys.readouterr().err
    assert "not evaluated on the same images" in error and table.names[0] in error

    record["class_files"]["ade20k"] = "f" * 64
    write_json_atomic(b / "results.json", record)
    with pytest.raises(SFPError, match="different class files"):
        compare_runs(a, b, ["ade20k"])


# --------------------------------------------------------------------------- tables


def test_the_component_table_shows_a_difference_row_with_its_interval_under_each_row(analysis_runs):
    settings = BootstrapSettings(resamples=200, seed=1)
    table = components_table(load_runs(analysis_runs / "components"), intervals=settings)
    assert table.values.index.names == ["mitigator", "enhancer", "integrator", "Row"]
    difference = ("off", "off", "on", "Δ vs full")
    assert table.kinds[difference] == "difference"
    assert table.values.loc[difference, "voc21"] == pytest.approx(
        table.values.loc[("off", "off", "on", "mIoU"), "voc21"] - table.values.loc[("on", "on", "on", "mIoU"), "voc21"])
    # the interval a table shows for a pair is compare's for the same pair (same seed); the full method's row is
    # the mean of its two identical runs, so its resamples are those of either run
    [voc] = compare_runs(analysis_runs / "components" / "on-on-on", analysis_runs / "components" / "off-off-on",
                         ["voc21"], settings)
    assert (table.lo.loc[difference, "voc21"], table.hi.loc[difference, "voc21"]) == pytest.approx((voc.lo, voc.hi))
    assert not np.isnan(table.lo.loc[difference, "avg"])
    assert ("on", "on", "on", "Δ vs full") not in table.values.index  # no difference of the reference to itself

    markdown, latex, csv = render(table, "md"), render(table, "tex"), render(table, "csv")
    cell = f"[{voc.lo:+.2f}, {voc.hi:+.2f}]"
    assert cell in markdown and cell in latex
    star = [line for line in markdown.splitlines() if "Δ vs full" in line and "]*" in line]
    significant = [(r, c) for r in table.values.index for c in ("voc21", "ade20k", "avg") if table.kinds[r] ==
                   "difference" and (table.lo.loc[r, c] > 0 or table.hi.loc[r, c] < 0)]
    assert bool(star) == bool(significant)
    header = csv.splitlines()[0].split(",")
    assert {"voc21_lo", "voc21_hi", "voc21_excludes_zero", "avg_lo", "avg_hi"} <= set(header)
    assert "paired bootstrap" in markdown


def test_sweep_and_main_tables_show_intervals_and_the_main_table_compares_reproduced_rows(analysis_runs, tmp_path):
    settings = BootstrapSettings(resamples=100)
    sweep = sweep_table(load_runs(analysis_runs / "sweep_top_k"), "mitigator.top_k", intervals=settings)
    assert [r for r in sweep.values.index if sweep.kinds[r] == "difference"] == [
        (2, "Δ vs mitigator.top_k=10 (default)"), (5, "Δ vs mitigator.top_k=10 (default)")]
    table = main_table(load_runs(analysis_runs / "presets"), backbone_labels=TINY_AS_B16, reference="clip",
                       intervals=settings)
    row = ("ViT-B/16", "NACLIP", "Δ naclip vs clip")
    [voc] = compare_runs(analysis_runs / "presets" / "clip", analysis_runs / "presets" / "naclip", ["voc21"],
                         settings)
    assert table.values.loc[row, "voc21"] == pytest.approx(voc.delta)
    assert (table.lo.loc[row, "voc21"], table.hi.loc[row, "voc21"]) == pytest.approx((voc.lo, voc.hi))
    published = [r for r in table.values.index if r[2].startswith("Δ naclip vs NACLIP README")]
    assert published and np.isnan(table.lo.loc[published[0]]).all()  # published figures have no images
    assert "no per-image records" in render(table, "md")


def test_runs_without_per_image_records_get_no_interval_and_a_note_naming_them(analysis_runs, tmp_path):
    runs = tmp_path / "runs"
    shutil.copytree(analysis_runs / "sweep_top_k", runs)
    (runs / "k5" / "per_image" / "voc21.npz").unlink()
    table = sweep_table(load_runs(runs), "mitigator.top_k", intervals=BootstrapSettings(resamples=50))
    row = (5, "Δ vs mitigator.top_k=10 (default)")
    assert np.isnan(table.lo.loc[row, "voc21"]) and not np.isnan(table.lo.loc[row, "ade20k"])
    assert np.isnan(table.lo.loc[row, "avg"])  # an average needs every dataset
    assert any("no interval" in note and "voc21.npz" in note for note in table.notes)


# --------------------------------------------------------------------------- protocols side by side


def test_rows_evaluated_under_different_protocols_are_flagged_not_silently_compared(analysis_runs, tmp_path):
    runs = tmp_path / "runs"
    shutil.copytree(analysis_runs / "presets", runs)
    path = runs / "naclip" / "results.json"
    record = read_results(path)
    record["config"]["inference"]["pamr"] = True  # as if naclip had been run with PAMR
    write_json_atomic(path, record)
    table = main_table(load_runs(runs), backbone_labels=TINY_AS_B16, published_rows="matched")
    assert ("ViT-B/16", "NACLIP", "reproduced: naclip ‡") in table.values.index
    assert any("protocols differ" in n and "inference.pamr" in n and "naclip" in n for n in table.notes)

    components = tmp_path / "components"
    shutil.copytree(analysis_runs / "components", components)
    path = components / "off-off-off" / "results.json"
    record = read_results(path)
    record["config"]["datasets"]["voc21"]["short_side"] = 48
    write_json_atomic(path, record)
    notes = components_table(load_runs(components)).notes
    assert any("dataset.short_side" in n and "mitigator=off, enhancer=off, integrator=off" in n for n in notes)
    assert not any("protocols differ" in n for n in components_table(load_runs(analysis_runs / "components")).notes)


def test_a_precision_sweep_compares_precisions_on_purpose_and_is_not_flagged(analysis_runs, tmp_path):
    runs = tmp_path / "runs"
    shutil.copytree(analysis_runs / "sweep_top_k" / "k10", runs / "float32")
    shutil.copytree(analysis_runs / "sweep_top_k" / "k10", runs / "bfloat16")
    path = runs / "bfloat16" / "results.json"
    record = read_results(path)
    record["config"]["inference"]["precision"] = "bfloat16"  # as the `precision` experiment records it
    write_json_atomic(path, record)
    table = sweep_table(load_runs(runs), "inference.precision", intervals=BootstrapSettings(resamples=50))
    row = ("bfloat16", "Δ vs inference.precision=float32 (default)")
    assert table.kinds[row] == "difference" and table.lo.loc[row, "voc21"] == table.hi.loc[row, "voc21"] == 0
    assert not any("protocols differ" in note for note in table.notes)
