"""`analysis.protocol_diff`: what differs between two runs, or between a run and a published row.

Real tiny runs (a 3-image VOC tree, the random tiny model) plant one difference per category that a run can vary
cheaply (config, protocol, class file, templates, evaluated images); copies of a results.json with edited
fields plant the rest (weights, versions, records written before a fact was recorded).
"""
from __future__ import annotations

import argparse
import copy
import csv
import json
import shutil

import pytest

import sfp
from analysis.names import BENCHMARKS
from analysis.protocol_diff import (
    CATEGORIES, DIFFERS, NOT_RECORDED, NOT_STATED, NOT_STATED_KIND, UNJUDGED, Difference, add_diff_parser,
    diff_published, diff_runs, format_differences, protocol_facts, run_diff,
)
from sfp.tracking.results_store import RESULTS_FILENAME, read_results, write_json_atomic
from tests.data_layouts_fixture import build_layout
from tests.helpers import REPO, tiny_overrides

VARIANTS = {
    "base": [],
    "same": [],
    "ignored": ["inference.batch_size=2", "inference.images_per_batch=1", "tracker.project=elsewhere",
                "tracker.num_overlays=1"],
    "pamr": ["inference.pamr=true", "mitigator.top_k=5"],
    "short_side": ["datasets.voc21.short_side=48"],
    "class_names": ["datasets.voc21.class_names={class_file}"],
    "templates": ["inference.templates=sfp15"],
    "images": ["datasets.voc21.max_images=2"],
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Run folder of each variant (one tiny job each, all on one data tree)."""
    root = tmp_path_factory.mktemp("diff_runs")
    build_layout("voc21", root / "data", n=3)
    class_file = root / "voc21_renamed.txt"
    names = (REPO / "sfp" / "data" / "class_names" / "voc21.txt").read_text(encoding="utf-8").splitlines()
    class_file.write_text("\n".join(names[:2] + ["aircraft"] + names[3:]) + "\n", encoding="utf-8")
    folders = {}
    for name, extra in VARIANTS.items():
        overrides = tiny_overrides(root) + ["datasets.voc21.short_side=40"]
        overrides += [o.format(class_file=class_file) for o in extra]
        folders[name] = root / "runs" / name
        sfp.run_job(sfp.compose(overrides), folders[name])
    return folders


def record(runs, name):
    return read_results(runs[name] / RESULTS_FILENAME)


def facts(differences):
    return {(d.category, d.key): (d.a, d.b) for d in differences}


def edited_copy(runs, tmp_path, edit, name="edited"):
    """A copy of the base run's folder whose results.json `edit(record)` changed."""
    folder = tmp_path / name
    shutil.copytree(runs["base"], folder)
    changed = record(runs, "base")
    edit(changed)
    write_json_atomic(folder / RESULTS_FILENAME, changed)
    return folder


def published_csv(path, rows):
    """A published-results file with the four protocol columns; `rows` give method, backbone, source and
    any of note, short_side, window, postprocess, weights and figures (default: a voc21 figure only)."""
    columns = ["method", "backbone", *BENCHMARKS, "source", "note", "short_side", "window", "postprocess", "weights"]
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({"voc21": 50.0, **row})
    return path


def published_row(**cells):
    row = {"method": "SFP", "backbone": "tiny", "source": "a paper", "note": "", "short_side": "", "window": "",
           "postprocess": "", "weights": "", **{key: float("nan") for key in BENCHMARKS}, "voc21": 50.0}
    row.update(cells)
    return row


# --------------------------------------------------------------------------- run vs run


def test_identical_runs_have_no_differences(runs):
    differences = diff_runs(record(runs, "base"), record(runs, "same"))
    assert differences == []
    assert "no differences that can move a number" in format_differences(differences, "a", "b")


def test_the_facts_come_in_the_documented_categories(runs):
    found = protocol_facts(record(runs, "base"))
    assert tuple(found) == CATEGORIES
    assert found["config"]["datasets.voc21.short_side"] == 40  # per-dataset settings are part of the config
    assert found["protocol"]["voc21.crop"] == 64 and found["protocol"]["voc21.stride"] == 32
    assert set(found["templates"]) == {"name", "count", "sha256"}
    assert {"source", "weights_sha256", "checkpoint_sha256", "vfm_source"} <= set(found["weights"])
    assert {"torch", "python", "code_version"} <= set(found["versions"])
    assert found["images"]["voc21.n_images"] == 3 and len(found["images"]["voc21.images_sha256"]) == 64


def test_settings_that_cannot_change_numbers_are_not_reported(runs):
    assert diff_runs(record(runs, "base"), record(runs, "ignored")) == []
    config = protocol_facts(record(runs, "base"))["config"]
    for key in ("tracker.project", "inference.batch_size", "inference.images_per_batch", "paths.output_dir",
                "paths.data_root", "datasets.voc21.root"):
        assert key not in config


def test_a_config_difference_is_named(runs):
    differences = diff_runs(record(runs, "base"), record(runs, "pamr"))
    found = facts(differences)
    assert found[("config", "inference.pamr")] == (False, True)
    assert found[("config", "mitigator.top_k")] == (10, 5)
    assert found[("protocol", "voc21.pamr_steps")] == (0, 10)  # the effective protocol follows
    report = format_differences(differences, "run a", "run b")
    assert "config: inference.pamr: false -> true" in report
    assert "config: mitigator.top_k: 10 -> 5" in report
    # categories in their order, keys sorted within each
    categories = [d.category for d in differences]
    assert categories == sorted(categories, key=CATEGORIES.index)
    for category in set(categories):
        keys = [d.key for d in differences if d.category == category]
        assert keys == sorted(keys)


def test_a_protocol_difference_is_named(runs):
    found = facts(diff_runs(record(runs, "base"), record(runs, "short_side")))
    assert found[("protocol", "voc21.short_side")] == (40, 48)
    assert found[("config", "datasets.voc21.short_side")] == (40, 48)
    assert {category for category, _ in found} == {"config", "protocol"}


def test_a_class_file_difference_is_named(runs):
    base, other = record(runs, "base"), record(runs, "class_names")
    found = facts(diff_runs(base, other))
    assert found[("class files", "voc21")] == (base["class_files"]["voc21"], other["class_files"]["voc21"])
    assert ("config", "datasets.voc21.class_names") in found


def test_a_template_difference_is_named(runs):
    found = facts(diff_runs(record(runs, "base"), record(runs, "templates")))
    assert found[("templates", "name")] == ("single", "sfp15")
    assert found[("templates", "count")] == (1, 15)
    assert ("templates", "sha256") in found
    assert found[("config", "inference.templates")] == ("single", "sfp15")


def test_an_images_difference_is_named(runs):
    found = facts(diff_runs(record(runs, "base"), record(runs, "images")))
    assert found[("images", "voc21.n_images")] == (3, 2)
    assert ("images", "voc21.images_sha256") in found
    assert found[("config", "datasets.voc21.max_images")] == (None, 2)


def test_a_weights_difference_is_named(runs):
    base = record(runs, "base")
    other = copy.deepcopy(base)
    other["model"].update(source="file:/weights/clip.pt#sha256=" + "ab" * 32, weights_sha256="ab" * 32)
    differences = diff_runs(base, other)
    assert facts(differences) == {("weights", "source"): ("random-init", other["model"]["source"]),
                                  ("weights", "weights_sha256"): (None, "ab" * 32)}
    assert "weights: weights_sha256: null -> " + "ab" * 32 in format_differences(differences, "a", "b")


def test_a_versions_difference_is_named(runs):
    base = record(runs, "base")
    other = copy.deepcopy(base)
    other["versions"]["torch"] = "1.13.1"
    assert facts(diff_runs(base, other)) == {("versions", "torch"): (base["versions"]["torch"], "1.13.1")}


def test_facts_an_older_record_lacks_show_as_not_recorded(runs):
    base = record(runs, "base")
    old = copy.deepcopy(base)
    for key in ("templates", "model", "versions", "per_image", "protocol", "class_files"):
        del old[key]
    differences = diff_runs(old, base)
    found = facts(differences)
    assert found[("templates", "name")] == (NOT_RECORDED, "single")
    assert found[("versions", "torch")] == (NOT_RECORDED, base["versions"]["torch"])
    assert found[("weights", "source")] == (NOT_RECORDED, "random-init")
    assert found[("class files", "voc21")] == (NOT_RECORDED, base["class_files"]["voc21"])
    assert found[("images", "voc21.images_sha256")][0] == NOT_RECORDED
    assert ("images", "voc21.n_images") not in found  # still known from the metrics
    assert found[("protocol", "voc21.short_side")] == (NOT_RECORDED, 40)
    assert "templates: name: not recorded -> single" in format_differences(differences, "old", "new")
    assert diff_runs(old, copy.deepcopy(old)) == []  # both lack a fact: no difference


# --------------------------------------------------------------------------- run vs published


def test_a_published_window_and_short_side_are_compared(runs):
    differences = diff_published(record(runs, "base"), published_row(window="224/112", short_side="*=336"))
    stated = {(d.category, d.key): (d.a, d.b) for d in differences if d.kind == DIFFERS}
    assert stated == {("protocol", "window"): ("64/32", "224/112"), ("protocol", "voc21.short_side"): (40, 336)}
    unstated = {d.key: d for d in differences if d.kind == NOT_STATED_KIND}
    assert set(unstated) == {"postprocess", "weights"}
    assert all(d.b == NOT_STATED for d in unstated.values())
    assert unstated["postprocess"].a == "none" and unstated["weights"].a == "random-init"
    report = format_differences(differences, "run", "published")
    assert "protocol: window: 64/32 -> 224/112" in report
    assert "protocol: voc21.short_side: 40 -> 336" in report
    assert NOT_STATED in report and "weights: weights: random-init" in report


def test_a_published_protocol_the_run_follows_is_not_a_difference(runs):
    row = published_row(window="64/32", short_side="*=336;voc21=40;ade20k=448", postprocess="none",
                        weights="OpenAI CLIP ViT-B/16")
    differences = diff_published(record(runs, "base"), row)
    assert [(d.key, d.kind) for d in differences] == [("weights", DIFFERS)]  # random init is never CLIP weights
    assert "no differences" not in format_differences(differences, "a", "b")


def test_published_windows_are_compared_per_dataset(runs):
    base = record(runs, "base")

    def windows(run, text, **figures):
        return {d.key: (d.a, d.b, d.kind) for d in diff_published(run, published_row(window=text, **figures))
                if d.key.endswith("window")}

    assert windows(base, "*=224/112;voc21=whole image") == {"window": ("64/32", "whole image", DIFFERS)}
    assert windows(base, "*=224/112;voc21=64/32") == {}
    assert windows(base, "voc20=64/32") == {"voc21.window": ("64/32", NOT_STATED, NOT_STATED_KIND)}
    # two datasets run with different windows: one entry per dataset
    two = copy.deepcopy(base)
    two["protocol"]["voc20"] = {**two["protocol"]["voc21"], "crop": 96, "stride": 48}
    two["metrics"]["voc20"] = two["metrics"]["voc21"]
    assert windows(two, "224/112", voc20=80.0) == {"voc21.window": ("64/32", "224/112", DIFFERS),
                                                  "voc20.window": ("96/48", "224/112", DIFFERS)}
    assert windows(two, "*=64/32;voc20=96/48", voc20=80.0) == {}
    # whole-image inference is a crop that holds every resized image
    whole = copy.deepcopy(base)
    whole["protocol"]["voc21"].update(crop=2048, stride=2048, max_long_side=2048)
    assert windows(whole, "whole image") == {}


def test_short_sides_of_datasets_without_a_figure_are_not_compared(runs):
    row = published_row(short_side="voc21=40;ade20k=448", voc21=float("nan"), ade20k=20.0)
    assert [d.key for d in diff_published(record(runs, "base"), row) if d.key.endswith("short_side")] == []
    row = published_row(short_side="ade20k=448")  # a figure for voc21, but no side stated for it
    [unstated] = [d for d in diff_published(record(runs, "base"), row) if d.key.endswith("short_side")]
    assert (unstated.key, unstated.kind, unstated.a) == ("voc21.short_side", NOT_STATED_KIND, 40)


def test_published_postprocessing_is_compared_with_pamr(runs):
    def postprocess(name, text):
        return {d.key: (d.a, d.b, d.kind) for d in diff_published(record(runs, name), published_row(postprocess=text))
                if d.key == "postprocess"}

    assert postprocess("base", "PAMR") == {"postprocess": ("none", "PAMR", DIFFERS)}
    assert postprocess("base", "none") == {}
    assert postprocess("pamr", "PAMR") == {}
    assert postprocess("pamr", "none") == {"postprocess": ("PAMR (10 steps, dilations 8,16)", "none", DIFFERS)}
    assert postprocess("base", "none (values without the diffusion refinement)") == {}  # remarks in brackets
    assert postprocess("base", "DenseCRF")["postprocess"][2] == UNJUDGED  # free text: shown, not judged


def test_published_weights_are_judged_only_when_clearly_comparable(runs):
    def weights(source, text, model="ViT-B-16"):
        changed = record(runs, "base")
        changed["model"].update(source=source, is_real_clip=True)
        changed["config"]["backbone"]["model"] = model
        return [(d.kind, d.a, d.b) for d in diff_published(changed, published_row(weights=text))
                if d.key == "weights"]

    assert weights("open_clip:ViT-B-16:openai", "OpenAI CLIP ViT-B/16") == []
    assert weights("open_clip:ViT-L-14:openai", "OpenAI CLIP ViT-B/16")[0][0] == DIFFERS
    assert weights("open_clip:ViT-B-16:laion2b_s34b_b88k", "OpenAI CLIP ViT-B/16")[0][0] == DIFFERS
    assert weights("open_clip:ViT-B-16:openai", "LAION-2B ViT-B/16")[0][0] == DIFFERS
    assert weights("open_clip:ViT-B-16:openai", "MetaCLIP ViT-B/16")[0][0] == DIFFERS
    assert weights("open_clip:ViT-B-16:openai", "OpenAI ViT-B/16 (the evaluation's weights)") == []
    local = "file:/w/clip.pt#sha256=" + "cd" * 32
    assert weights(local, "OpenAI CLIP ViT-B/16") == [(UNJUDGED, local, "OpenAI CLIP ViT-B/16")]
    assert weights(local, "OpenAI CLIP ViT-L/14")[0][0] == DIFFERS  # the config names another architecture
    assert weights("open_clip:ViT-B-16:openai", "the authors' CLIP")[0][0] == UNJUDGED
    assert weights("random-init", "OpenAI CLIP ViT-B/16")[0][0] == DIFFERS


def test_the_published_backbone_label_is_compared(runs):
    differences = diff_published(record(runs, "base"), published_row(backbone="ViT-B/16"))
    assert facts(differences)[("weights", "backbone")] == ("tiny", "ViT-B/16")
    assert ("weights", "backbone") not in facts(diff_published(record(runs, "base"), published_row()))


# --------------------------------------------------------------------------- command line


def cli(argv):
    parser = argparse.ArgumentParser()
    add_diff_parser(parser.add_subparsers(dest="command"))
    return run_diff(parser.parse_args(["diff", *map(str, argv)]))


def test_the_command_prints_the_report(runs, capsys):
    assert cli([runs["base"], runs["pamr"] / RESULTS_FILENAME]) == 0
    out = capsys.readouterr().out
    assert "config: inference.pamr: false -> true" in out and f"a: {runs['base']}" in out
    assert cli([runs["base"], runs["same"]]) == 0
    assert "no differences that can move a number" in capsys.readouterr().out


def test_the_command_reads_an_edited_copy(runs, tmp_path, capsys):
    torch_version = record(runs, "base")["versions"]["torch"]
    older = edited_copy(runs, tmp_path, lambda r: r["versions"].update(torch="1.13.1"))
    assert cli([runs["base"], older]) == 0
    assert f"versions: torch: {torch_version} -> 1.13.1" in capsys.readouterr().out


def test_the_command_prints_json(runs, capsys):
    assert cli([runs["base"], runs["templates"], "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert {(d["category"], d["key"], d["a"], d["b"]) for d in listed} >= {
        ("templates", "name", "single", "sfp15"), ("templates", "count", 1, 15),
        ("config", "inference.templates", "single", "sfp15")}
    assert all({"category", "key", "a", "b"} <= set(d) for d in listed)


def test_the_command_compares_with_a_published_row(runs, tmp_path, capsys):
    table = published_csv(tmp_path / "published.csv", [
        dict(method="SFP", backbone="tiny", source="paper table 2", window="224/112", short_side="*=336"),
        dict(method="NACLIP", backbone="tiny", source="NACLIP README", note="PAMR on", postprocess="PAMR"),
        dict(method="NACLIP", backbone="tiny", source="NACLIP paper", postprocess="none"),
        dict(method="NACLIP", backbone="ViT-B/16", source="NACLIP paper", postprocess="none"),
        dict(method="CorrCLIP", backbone="tiny", source="a table", note="with SAM masks", postprocess="SAM masks"),
        dict(method="CorrCLIP", backbone="tiny", source="a table", note="without post-processing",
             postprocess="none"),
    ])
    assert cli([runs["base"], "--published", "sfp", "--published-file", table]) == 0  # a preset names the method
    out = capsys.readouterr().out
    assert "protocol: window: 64/32 -> 224/112" in out and "protocol: voc21.short_side: 40 -> 336" in out
    assert "not stated by the source" in out
    assert cli([runs["base"], "--published", "NACLIP", "--source", "readme", "--published-file", table,
                "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(d["key"], d["a"], d["b"]) for d in listed if d["kind"] == DIFFERS] == [("postprocess", "none", "PAMR")]
    assert cli([runs["base"], "--published", "NACLIP", "--backbone", "ViT-B/16", "--published-file", table]) == 0
    assert "weights: backbone: tiny -> ViT-B/16" in capsys.readouterr().out
    assert cli([runs["pamr"], "--published", "CorrCLIP", "--source", "without", "--published-file", table]) == 0
    out = capsys.readouterr().out  # --source also matches the note, the only thing telling these rows apart
    assert "without post-processing" in out and "protocol: postprocess: PAMR (10 steps, dilations 8,16) -> none" in out


@pytest.mark.parametrize("argv, message", [
    (lambda runs, tmp: [tmp, runs["base"]], "holds no results.json"),
    (lambda runs, tmp: [runs["base"], tmp / "missing.json"], "missing.json does not exist"),
    (lambda runs, tmp: [runs["base"], runs["same"], "--published", "SFP"], "give RUN_B or --published"),
    (lambda runs, tmp: [runs["base"], runs["same"], "--source", "x"], "--source goes with --published"),
    (lambda runs, tmp: [runs["base"], "--published", "NoSuchMethod", "--published-file", tmp / "p.csv"],
     "known methods: SFP, NACLIP"),
    (lambda runs, tmp: [runs["base"], "--published", "NACLIP", "--published-file", tmp / "p.csv"],
     "NACLIP README"),
    (lambda runs, tmp: [runs["base"], "--published", "SFP", "--source", "nowhere", "--published-file",
                        tmp / "p.csv"], "candidates: tiny | paper"),
    (lambda runs, tmp: [runs["base"]], "give RUN_B or --published"),
])
def test_bad_input_is_an_error_naming_the_problem(runs, tmp_path, capsys, argv, message):
    published_csv(tmp_path / "p.csv", [
        dict(method="SFP", backbone="tiny", source="paper"),
        dict(method="NACLIP", backbone="tiny", source="NACLIP README"),
        dict(method="NACLIP", backbone="tiny", source="NACLIP paper"),
    ])
    assert cli(argv(runs, tmp_path)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err


def test_differences_serialise_as_json():
    difference = Difference("config", "inference.pamr_dilations", (8, 16), NOT_RECORDED)
    assert difference.as_json() == {"category": "config", "key": "inference.pamr_dilations", "a": [8, 16],
                                    "b": NOT_RECORDED, "kind": DIFFERS, "note": ""}
