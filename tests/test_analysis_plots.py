"""Figures from REAL runs (`analysis_runs_fixture`): the plotted data are the tables' and records' numbers;
PNG and PDF files are written, and the same figure twice gives the same bytes."""
from __future__ import annotations

import math

import numpy as np
import pytest


from analysis import (
    detector_table, heatmap_plot, layer_stats_plot, load_records, load_runs, save_figure, sweep_plot, sweep_table,
)
from analysis.cli import main as cli
from analysis.plots import configurations
from sfp.tracking.results_store import read_results


def stats_of(analysis_runs, job, dataset="voc21"):
    return read_results(analysis_runs / job / "results.json")["outlier_stats"][dataset]


def test_the_sweep_plot_draws_the_table_values_against_the_swept_value(analysis_runs):
    table = sweep_table(load_runs(analysis_runs / "sweep_top_k"), "mitigator.top_k")
    figure = sweep_plot(table)
    axes = figure.axes[0]
    lines = {line.get_label(): line for line in axes.get_lines()}
    assert list(lines) == ["VOC21", "ADE", "Avg"]
    assert lines["VOC21"].get_xdata().tolist() == [2.0, 5.0, 10.0]
    assert lines["VOC21"].get_ydata().tolist() == table.values["voc21"].tolist()
    assert lines["Avg"].get_ydata().tolist() == table.values["avg"].tolist()
    assert axes.get_xlabel() == "mitigator.top_k" and axes.get_ylabel() == "mIoU (%)"


def test_a_categorical_sweep_is_spaced_evenly_with_the_values_as_ticks(analysis_runs):
    figure = sweep_plot(detector_table(load_runs(analysis_runs / "detector")))
    axes = figure.axes[0]
    assert [t.get_text() for t in axes.get_xticklabels()] == ["som", "l2", "lof"]
    assert axes.get_lines()[0].get_xdata().tolist() == [0, 1, 2]


def test_layer_statistics_have_one_line_per_configuration_with_duplicates_averaged(analysis_runs):
    records = load_records(analysis_runs / "components")
    figure = layer_stats_plot(records, "voc21")
    panels = [a for a in figure.axes if a.get_visible()]
    assert [a.get_title() for a in panels] == ["SOM candidates", "SOM candidates (no cls_scale)",
                                               "outliers (after top_k)", "max / median patch norm",
                                               "CLS attention entropy", "Jaccard with previous layer"]
    labels = [line.get_label() for line in panels[0].get_lines()]
    assert len(labels) == 7 and "mitigator=on, enhancer=on, integrator=on (2 runs)" in labels
    assert "mitigator=off, enhancer=on, integrator=off" not in labels  # never run
    expected = stats_of(analysis_runs, "components/on-off-on")
    line = next(l for l in panels[3].get_lines() if l.get_label() == "mitigator=on, enhancer=off, integrator=on")
    assert line.get_xdata().tolist() == expected["layer"]
    assert line.get_ydata().tolist() == pytest.approx(expected["norm_ratio"], abs=1e-12)
    jaccard = next(l for l in panels[5].get_lines() if l.get_label().endswith("(2 runs)")).get_ydata()
    assert math.isnan(jaccard[0])  # no previous layer
    both = [stats_of(analysis_runs, f"components/{j}")["jaccard"][1:] for j in ("on-on-on", "on-on-on-repeat")]
    assert jaccard[1:].tolist() == pytest.approx(np.mean(both, axis=0).tolist(), abs=1e-12)


def test_configurations_are_named_by_what_tells_them_apart(analysis_runs):
    labels = [label for label, _ in configurations(load_records(analysis_runs / "sweep_top_k"), "voc21")]
    assert labels == ["mitigator.top_k=10", "mitigator.top_k=2", "mitigator.top_k=5"]
    whole = dict(configurations(load_records(analysis_runs), "voc21"))
    full = "method=sfp, mitigator=on, enhancer=on, integrator=on, aggregation=on, mitigator.detector=som, " \
           "mitigator.top_k=10 (4 runs)"
    assert len(whole[full]) == 4
    assert "method=naclip, mitigator=off, enhancer=off, integrator=off, aggregation=off" in whole


def test_heat_maps_show_the_fraction_of_crops_with_an_outlier_at_each_patch(analysis_runs):
    records = load_records(analysis_runs / "components")
    figure = heatmap_plot(records, "voc21")
    images = {a.get_title(): a.get_images()[0].get_array() for a in figure.axes if a.get_images()}
    heat = stats_of(analysis_runs, "components/on-off-on")["heatmap"]
    expected = np.asarray(heat["counts"]) / heat["n_crops"]
    assert np.array_equal(np.asarray(images["mitigator=on, enhancer=off, integrator=on"]), expected)
    pooled = [stats_of(analysis_runs, f"components/{j}")["heatmap"] for j in ("on-on-on", "on-on-on-repeat")]
    expected = sum(np.asarray(h["counts"]) for h in pooled) / sum(h["n_crops"] for h in pooled)
    assert np.array_equal(np.asarray(images["mitigator=on, enhancer=on, integrator=on (2 runs)"]), expected)
    assert images["mitigator=on, enhancer=on, integrator=on (2 runs)"].shape == tuple(heat["grid"])


def test_figures_are_saved_as_png_and_pdf_reproducibly(analysis_runs, tmp_path):
    records = load_records(analysis_runs / "components")
    first = save_figure(heatmap_plot(records, "voc21"), tmp_path / "a" / "heatmap")
    second = save_figure(heatmap_plot(records, "voc21"), tmp_path / "b" / "heatmap")
    assert [p.name for p in first] == ["heatmap.png", "heatmap.pdf"]
    assert first[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and first[1].read_bytes()[:5] == b"%PDF-"
    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in second]


def test_missing_statistics_are_reported(analysis_runs):
    records = load_records(analysis_runs / "presets")
    with pytest.raises(ValueError, match="no run holds per-layer outlier statistics for 'cityscapes'"):
        layer_stats_plot(records, "cityscapes")
    clip_only = [r for r in records if r["choices"]["method"] == "clip"]
    with pytest.raises(ValueError, match="no run holds an outlier heat map"):
        heatmap_plot([{**r, "outlier_stats": {"voc21": {k: v for k, v in r["outlier_stats"]["voc21"].items()
                                                        if k != "heatmap"}}} for r in clip_only], "voc21")


def test_the_plots_command_writes_every_figure(analysis_runs, tmp_path, capsys):
    assert cli(["plots", "--runs", str(analysis_runs / "sweep_top_k"), "--out-dir", str(tmp_path),
                "--param", "mitigator.top_k", "--dataset", "voc21"]) == 0
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == ["layer-stats-voc21.pdf", "layer-stats-voc21.png", "outlier-heatmap-voc21.pdf",
                       "outlier-heatmap-voc21.png", "sweep-mitigator.top_k.pdf", "sweep-mitigator.top_k.png"]
    assert capsys.readouterr().out.split() == [str(tmp_path / n) for n in
                                               ["sweep-mitigator.top_k.png", "sweep-mitigator.top_k.pdf",
                                                "layer-stats-voc21.png", "layer-stats-voc21.pdf",
                                                "outlier-heatmap-voc21.png", "outlier-heatmap-voc21.pdf"]]


def test_the_plots_command_works_on_a_folder_mixing_plain_sweeps_and_experiment_runs(analysis_runs, tmp_path):
    from sfp.tracking.results_store import read_results, write_json_atomic
    from tests.analysis_runs_fixture import copy_runs

    runs = copy_runs(analysis_runs, tmp_path / "runs", "components", "sweep_top_k")
    for path in sorted((runs / "sweep_top_k").rglob("results.json")):  # as `-m +experiment=sweep_top_k` writes
        record = read_results(path)
        record["choices"]["experiment"] = "sweep_top_k"
        write_json_atomic(path, record)
    assert cli(["plots", "--runs", str(runs), "--out-dir", str(tmp_path / "figures"),
                "--param", "mitigator.top_k", "--dataset", "voc21"]) == 0
    labels = [label for label, _ in configurations(load_records(runs), "voc21")]
    assert not any("nan" in label for label in labels) and any("experiment=sweep_top_k" in label for label in labels)


def test_per_layer_lines_of_several_configurations_stay_distinguishable_on_whole_layer_ticks(analysis_runs):
    figure = layer_stats_plot(load_records(analysis_runs / "components"), "voc21")
    axes = figure.axes[0]
    styles = {(line.get_marker(), line.get_linestyle()) for line in axes.get_lines()}
    assert len(styles) == min(len(axes.get_lines()), 8)  # coinciding lines differ in marker and dash
    assert all(float(tick).is_integer() for tick in axes.get_xticks())
