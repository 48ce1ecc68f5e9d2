"""Tables from a folder of REAL runs (tiny model, `analysis_runs_fixture`): exact cells computed from the
records, golden markdown and LaTeX, missing and duplicated runs, published rows, the command line."""
from __future__ import annotations

import io
import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.analysis_runs_fixture import MISSING_COMBINATION, copy_runs
from tests.helpers import REPO

from analysis import (
    components_table, detector_table, filter_runs, load_published, load_runs, main_table, render, sweep_table,
)
from analysis.cli import main as cli
from sfp.tracking.results_store import read_results, write_json_atomic

TESTS = Path(__file__).resolve().parent  # golden files: tests/golden/<name>
TINY_AS_B16 = {"tiny": "ViT-B/16"}  # the tiny test model compared with the ViT-B/16 figures (mechanics only)


def miou(runs_dir: Path, job: str, dataset: str) -> float:
    value = read_results(runs_dir / job / "results.json")["metrics"][dataset]["miou"]
    return math.nan if value is None else value


def assert_golden(name: str, text: str) -> None:
    path = TESTS / name
    if os.environ.get("SFP_UPDATE_GOLDEN"):
        path.write_text(text, encoding="utf-8")
    assert text == path.read_text(encoding="utf-8"), f"{name} differs (SFP_UPDATE_GOLDEN=1 rewrites it)"


# --------------------------------------------------------------------------- components


def test_component_table_cells_are_the_records_miou_with_the_missing_combination_empty(analysis_runs):
    table = components_table(load_runs(analysis_runs / "components"))
    assert table.values.index.names == ["mitigator", "enhancer", "integrator"]
    assert list(table.values.index) == [(m, e, i) for m in ("off", "on") for e in ("off", "on") for i in ("off", "on")]
    for m, e, i in table.values.index:
        if (m, e, i) == MISSING_COMBINATION:
            continue
        for dataset in ("voc21", "ade20k"):
            assert table.values.loc[(m, e, i), dataset] == miou(analysis_runs, f"components/{m}-{e}-{i}", dataset)
    missing = table.values.loc[MISSING_COMBINATION]
    assert missing.isna().all() and (table.counts.loc[MISSING_COMBINATION] == 0).all()
    assert table.counts.loc[("on", "on", "on")].tolist() == [2, 2]  # the full method was run twice
    assert table.counts.loc[("on", "off", "on")].tolist() == [1, 1]
    full = table.values.loc[("on", "on", "on")]
    assert full["avg"] == pytest.approx((full["voc21"] + full["ade20k"]) / 2, abs=1e-12)
    row = table.values.loc[("off", "off", "on")]
    assert row["delta"] == pytest.approx(row["avg"] - full["avg"], abs=1e-12) and full["delta"] == 0


def test_a_missing_run_renders_as_empty_cells_never_zero(analysis_runs):
    table = components_table(load_runs(analysis_runs / "components"))
    line = next(l for l in render(table, "md").splitlines() if l.startswith("| off | on | off |"))
    assert line == "| off | on | off |  |  |  |  |  |"
    csv = pd.read_csv(io.StringIO(render(table, "csv")), keep_default_na=False)
    missing = csv[(csv.mitigator == "off") & (csv.enhancer == "on") & (csv.integrator == "off")].iloc[0]
    assert [missing[c] for c in ("voc21", "ade20k", "avg", "delta", "runs")] == ["", "", "", "", ""]
    assert " & on & off &  &  &  &  &  \\\\" in render(table, "tex").splitlines()


def test_duplicated_runs_are_averaged_and_counted_per_cell(analysis_runs, tmp_path):
    runs_dir = copy_runs(analysis_runs, tmp_path, "components")
    repeat = runs_dir / "components" / "on-on-on-repeat" / "results.json"
    record = read_results(repeat)
    first = record["metrics"]["voc21"]["miou"]
    record["metrics"]["voc21"]["miou"] = first + 3.0  # as if re-run with another code version
    del record["metrics"]["ade20k"]  # ... that evaluated voc21 only
    write_json_atomic(repeat, record)

    table = components_table(load_runs(runs_dir / "components"))
    full = ("on", "on", "on")
    assert table.values.loc[full, "voc21"] == pytest.approx(first + 1.5, abs=1e-12)
    assert table.values.loc[full, "ade20k"] == miou(analysis_runs, "components/on-on-on", "ade20k")
    assert table.counts.loc[full].tolist() == [2, 1]
    line = next(l for l in render(table, "md").splitlines() if l.startswith("| on | on | on |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    ade = round(miou(analysis_runs, "components/on-on-on", "ade20k"), 2)
    assert cells[3:5] == [f"{first + 1.5:.2f}", f"{ade:.2f} (n=1)"] and cells[-1] == "1-2"


def test_runs_of_other_settings_in_the_same_folder_are_kept_apart(analysis_runs):
    # The whole folder: the full-method row takes the four runs at the default settings (components,
    # repeat, detector/som, sweep_top_k/k10), not the detector or top_k variants.
    table = components_table(load_runs(analysis_runs))
    full = ("on", "on", "on")
    assert table.counts.loc[full].tolist() == [4, 4]
    assert table.values.loc[full, "voc21"] == miou(analysis_runs, "components/on-on-on", "voc21")
    assert any("4 run(s) with other settings of mitigator.detector, mitigator.top_k left out" in n
               for n in table.notes)


def test_configurations_without_a_default_become_rows_of_their_own(analysis_runs, tmp_path):
    runs_dir = copy_runs(analysis_runs, tmp_path, "detector/l2", "detector/lof")
    table = components_table(load_runs(runs_dir))
    assert table.values.index.names[-1] == "Configuration"
    rows = table.values.loc[("on", "on", "on")]
    assert list(rows.index) == ["mitigator.detector=l2", "mitigator.detector=lof"]
    assert rows.loc["mitigator.detector=lof", "voc21"] == miou(analysis_runs, "detector/lof", "voc21")
    assert rows["delta"].isna().all() and any("no difference shown" in n for n in table.notes)


# --------------------------------------------------------------------------- detector and sweeps


def test_detector_table_has_a_row_per_detector_and_the_difference_to_som(analysis_runs):
    table = detector_table(load_runs(analysis_runs / "detector"))
    assert [k[0] for k in table.values.index] == ["som", "l2", "lof"]
    for detector in ("som", "l2", "lof"):
        assert table.values.loc[(detector,), "ade20k"] == miou(analysis_runs, f"detector/{detector}", "ade20k")
    som = table.values.loc[("som",), "avg"]
    assert table.values.loc[("lof",), "delta"] == pytest.approx(table.values.loc[("lof",), "avg"] - som, abs=1e-12)
    assert table.delta_label == "Δ Avg vs som"


def test_sweep_table_reads_the_config_field_and_sorts_values_numerically(analysis_runs):
    table = sweep_table(load_runs(analysis_runs / "sweep_top_k"), "mitigator.top_k")
    assert table.values.index.names == ["mitigator.top_k"] and [k[0] for k in table.values.index] == [2, 5, 10]
    for k in (2, 5, 10):
        assert table.values.loc[(k,), "voc21"] == miou(analysis_runs, f"sweep_top_k/k{k}", "voc21")
    assert table.values.loc[(10,), "delta"] == 0 and table.delta_label.endswith("mitigator.top_k=10 (default)")
    with pytest.raises(KeyError, match="did you mean mitigator.top_k"):
        sweep_table(load_runs(analysis_runs / "sweep_top_k"), "mitigator.topk")


# --------------------------------------------------------------------------- main table and published rows


def test_main_table_puts_published_rows_and_differences_beside_the_reproduced_ones(analysis_runs):
    runs = load_runs([analysis_runs / "presets", analysis_runs / "components"])
    table = main_table(runs, backbone_labels=TINY_AS_B16)
    values, kinds = table.values, table.kinds
    clip = ("ViT-B/16", "CLIP", "reproduced: clip")
    published = ("ViT-B/16", "CLIP", "published: ResCLIP README figures; vanilla CLIP dense features")
    difference = ("ViT-B/16", "CLIP", "Δ clip vs ResCLIP README figures")
    assert values.loc[clip, "voc21"] == miou(analysis_runs, "presets/clip", "voc21")
    assert values.loc[published, ["voc21", "ade20k", "avg"]].tolist() == [16.2, 2.1, pytest.approx(9.15)]
    assert values.loc[difference, "voc21"] == values.loc[clip, "voc21"] - 16.2
    assert [kinds[r] for r in (clip, published, difference)] == ["reproduced", "published", "difference"]

    maskclip = ("ViT-B/16", "MaskCLIP", "reproduced: maskclip")  # evaluated voc21 only
    assert math.isnan(values.loc[maskclip, "ade20k"]) and math.isnan(values.loc[maskclip, "avg"])
    assert table.counts.loc[maskclip].tolist() == [1, 0]
    sclip = ("ViT-B/16", "SCLIP", "reproduced: sclip")  # a preset with published figures but no run
    assert values.loc[sclip].isna().all()

    naclip_rows = [r for r in values.index if r[1] == "NACLIP" and kinds[r] == "published"]
    assert [r[2] for r in naclip_rows] == ["published: NACLIP paper via Trident/ResCLIP figures; no PAMR",
                                           "published: NACLIP README; PAMR on",
                                           "published: OV-Stitcher Table 1 (CVPR'26 Findings)"]
    proxyclip = [r for r in values.index if r[1] == "ProxyCLIP"]  # a preset with published figures but no run
    assert [r[2] for r in proxyclip if kinds[r] == "published"] == ["published: Trident README figure; uses DINO",
                                                                    "published: OV-Stitcher Table 1 (CVPR'26 Findings)"]
    assert values.loc[("ViT-B/16", "ProxyCLIP", "reproduced: proxyclip")].isna().all()

    sfp_rows = [r[2] for r in values.index if r[1] == "SFP"]
    assert sfp_rows[:2] == ["reproduced: sfp", "reproduced: sfp_early (Dec 2025 code state)"]
    sfp_published = next(r for r in values.index if r[1] == "SFP" and kinds[r] == "published")
    assert "Dec 2025 code state" in sfp_published[2]
    assert values.loc[sfp_published, "voc21"] == 61.40 and math.isnan(values.loc[sfp_published, "ade20k"])
    early = ("ViT-B/16", "SFP", "Δ sfp_early vs SFP repository evaluation log (Dec 2025 code state)")
    assert values.loc[early, "voc21"] == miou(analysis_runs, "presets/sfp_early", "voc21") - 61.40
    assert table.counts.loc[("ViT-B/16", "SFP", "reproduced: sfp")].tolist() == [2, 2]


def test_without_a_published_backbone_the_main_table_shows_the_reproduced_rows_only(analysis_runs):
    table = main_table(load_runs(analysis_runs / "presets"))
    assert set(table.kinds) == {"reproduced"}
    assert [r[1:] for r in table.values.index] == [
        ("CLIP", "reproduced: clip"), ("MaskCLIP", "reproduced: maskclip"), ("NACLIP", "reproduced: naclip"),
        ("SFP", "reproduced: sfp"), ("SFP", "reproduced: sfp_early (Dec 2025 code state)")]
    assert table.values.loc[("tiny", "SFP", "reproduced: sfp")].isna().all()  # the release preset was not run
    assert "\\textbf{" + f"{miou(analysis_runs, 'presets/clip', 'voc21'):.2f}" + "}" in render(table, "tex")


def test_the_published_figures_are_the_projects_own_data_file():
    published = load_published()
    assert len(published) == 44 and set(published["backbone"]) == {"ViT-B/16", "ViT-L/14", "MetaCLIP ViT-B/16"}
    cliper = published[(published["method"] == "CLIPer") & (published["backbone"] == "ViT-B/16")].iloc[0]
    assert cliper[["voc21", "ade20k"]].tolist() == [60.7, 19.8] and "CLIPer README" in cliper["source"]
    sfp = published[published["method"] == "SFP"].iloc[0]
    assert sfp["voc21"] == 61.40 and sfp[["context60", "ade20k"]].isna().all()
    assert len(published[(published["method"] == "NACLIP") & (published["backbone"] == "ViT-B/16")]) == 3
    # OV-Stitcher's Table 1 reprints SFP's full ViT-B/16 row
    stitcher = published[published["source"].str.startswith("OV-Stitcher Table 1")]
    row = stitcher[(stitcher["method"] == "SFP") & (stitcher["backbone"] == "ViT-B/16")].iloc[0]
    assert row[["voc21", "context60", "coco_object", "voc20", "cityscapes", "context59", "ade20k",
                "coco_stuff"]].tolist() == [62.9, 37.2, 37.9, 84.5, 41.1, 39.9, 20.8, 26.4]
    assert len(stitcher) == 28 and set(stitcher["backbone"]) == {"ViT-B/16", "ViT-L/14", "MetaCLIP ViT-B/16"}
    # protocol facts where the source states them, empty where it does not
    sclip = published[published["source"] == "SCLIP README"].iloc[0]
    assert (sclip["window"], sclip["postprocess"]) == ("224/112", "none") and "cityscapes=560" in sclip["short_side"]
    assert published.loc[published["source"] == "ResCLIP README figures", "window"].eq("").all()


# --------------------------------------------------------------------------- golden files


def test_golden_markdown_and_latex(analysis_runs):
    main = main_table(load_runs([analysis_runs / "presets", analysis_runs / "components"]),
                      backbone_labels=TINY_AS_B16)
    components = components_table(load_runs(analysis_runs / "components"))
    assert_golden("golden/main.md", render(main, "md"))
    assert_golden("golden/main.tex", render(main, "tex"))
    assert_golden("golden/components.md", render(components, "md"))
    assert_golden("golden/components.tex", render(components, "tex"))
    assert_golden("golden/detector.md", render(detector_table(load_runs(analysis_runs / "detector")), "md"))
    assert_golden("golden/sweep-top_k.tex", render(sweep_table(load_runs(analysis_runs / "sweep_top_k"),
                                                        "mitigator.top_k"), "tex"))


def test_latex_uses_booktabs_bolds_the_best_value_per_column_and_flattened_markdown_headers(analysis_runs):
    table = components_table(load_runs(analysis_runs / "components"))
    tex = render(table, "tex")
    assert tex.count("\\toprule") == tex.count("\\midrule") == tex.count("\\bottomrule") == 1
    assert "\\hline" not in tex
    body = tex.split("\\midrule\n")[1].split("\\bottomrule")[0].splitlines()
    voc21 = [line.split(" & ")[3] for line in body]
    best = table.values["voc21"].round(2).max()
    expected = [f"\\textbf{{{v:.2f}}}" if round(v, 2) == best else ("" if math.isnan(v) else f"{v:.2f}")
                for v in table.values["voc21"]]
    assert voc21 == expected and sum(c.startswith("\\textbf") for c in voc21) == 1
    assert "\\multicolumn" in tex and "with background" in tex and "$\\Delta$ Avg vs full" in tex
    header = render(table, "md").splitlines()[2]
    assert header == ("| mitigator | enhancer | integrator | with background / VOC21 | without background / ADE "
                      "| Avg | Δ Avg vs full | runs |")


# --------------------------------------------------------------------------- command line


def test_the_command_line_writes_each_format(analysis_runs, tmp_path, capsys):
    out = tmp_path / "components.csv"
    assert cli(["components", "--runs", str(analysis_runs / "components"), "--out", str(out)]) == 0
    csv = pd.read_csv(out)
    row = csv[(csv.mitigator == "on") & (csv.enhancer == "off") & (csv.integrator == "on")].iloc[0]
    assert row["voc21"] == miou(analysis_runs, "components/on-off-on", "voc21") and row["runs"] == 1

    assert cli(["sweep", "--param", "mitigator.top_k", "--runs", str(analysis_runs / "sweep_top_k"),
                "--format", "tex"]) == 0
    assert capsys.readouterr().out == (TESTS / "golden/sweep-top_k.tex").read_text(encoding="utf-8")

    assert cli(["main", "--runs", str(analysis_runs / "presets"), "--where", "preset=clip",
                "--no-published"]) == 0
    printed = capsys.readouterr().out
    assert "reproduced: clip" in printed and "naclip" not in printed

    assert cli(["sweep", "--param", "mitigator.topk", "--runs", str(analysis_runs / "sweep_top_k")]) == 2
    assert "did you mean mitigator.top_k" in capsys.readouterr().err
    assert cli(["main", "--runs", str(tmp_path / "nothing-here")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_python_dash_m_analysis_runs_as_users_type_it(analysis_runs):
    result = subprocess.run([sys.executable, "-m", "analysis", "detector", "--runs", str(analysis_runs / "detector")],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout == (TESTS / "golden/detector.md").read_text(encoding="utf-8")


def test_where_filters_by_choice_config_field_and_column(analysis_runs):
    runs = load_runs(analysis_runs)
    assert set(filter_runs(runs, {"mitigator.top_k": "2"})["run_dir"]) == {str(analysis_runs / "sweep_top_k" / "k2")}
    assert set(filter_runs(runs, {"method": "naclip"})["preset"]) == {"naclip"}
    assert set(filter_runs(runs, {"dataset": "ade20k"})["dataset"]) == {"ade20k"}
    assert len(filter_runs(runs, {"stats.enabled": "true"})) == len(runs)


def test_one_block_per_backbone_each_with_its_own_published_rows(analysis_runs, tmp_path):
    runs_dir = copy_runs(analysis_runs, tmp_path, "presets/clip", "presets/naclip")
    for job, backbone in (("clip", "vit_b16"), ("naclip", "vit_l14")):
        path = runs_dir / "presets" / job / "results.json"
        record = read_results(path)
        record["choices"]["backbone"] = backbone  # as if evaluated with that backbone
        write_json_atomic(path, record)
    table = main_table(load_runs(runs_dir), published_rows="matched")
    assert list(dict.fromkeys(r[:2] for r in table.values.index)) == [("ViT-B/16", "CLIP"), ("ViT-L/14", "NACLIP")]
    large = table.values.loc[("ViT-L/14", "NACLIP", "published: ResCLIP README figures")]
    assert large[["voc21", "ade20k"]].tolist() == [52.2, 17.3]
    tex = render(table, "tex")
    body = tex.split("\\toprule")[1]
    assert body.count("\\midrule") == 2  # under the header, and between the two backbones
    assert "\\midrule\nViT-L/14 & NACLIP & reproduced: naclip" in tex
    # the best value is per backbone block: each block has its own bold cells
    assert "\\textbf{18.60}" in tex and "\\textbf{52.20}" in tex  # OV-Stitcher's CLIP row is the best B/16


def test_an_unknown_dataset_column_is_an_error_naming_it(analysis_runs, capsys):
    assert cli(["main", "--runs", str(analysis_runs), "--datasets", "voc21,voc99"]) == 2
    assert "unknown dataset(s) voc99" in capsys.readouterr().err
