"""Variants evaluated in one shared pass give exactly what each gives alone: every preset, every component
combination, failures, resume, the launcher and its fallback flag."""
from __future__ import annotations

import itertools
import json

import pytest
import torch

import sfp
from sfp.assembly import build_method
from sfp.calibration import build_registers
from sfp.config import catalog
from sfp.config.schema import COMPONENT_GROUPS
from sfp.errors import ConfigError
from sfp.grouping import PER_VARIANT_KEYS, feature_key, group_indices, group_key
from sfp.runner import run_jobs
from sfp.tracking.results_store import read_results, write_json_atomic

from tests.helpers import tiny_overrides
from tests.test_main_cli import run_main

PRESETS = sorted(catalog.presets())
COMBINATIONS = [dict(zip(COMPONENT_GROUPS, states)) for states in itertools.product(["on", "off"],
                                                                                     repeat=len(COMPONENT_GROUPS))]
# SFP's knobs that shape what variants of a pass share (its head keeps shared steps under keys naming them).
KNOBS = [["mitigator.detector=l2"], ["mitigator.detector=lof", "mitigator.lof_neighbours=8"], ["mitigator.top_k=3"],
         ["mitigator.cls_scale=1.0"], ["mitigator.no_neighbour=zero", "mitigator.top_k=20"], ["aggregation.beta=0.2"],
         ["enhancer.temperature=1.0"], ["enhancer.similarity=raw"], ["enhancer.mix=sc_clip"],
         ["integrator.source=attention_maps"], ["integrator.extend=1"], ["method.res_cls=0.0"],
         ["backbone.layers.ref=9"], ["backbone.layers.aux=4"], ["mitigator.layers=[2,5,8]"],
         ["mitigator.layers=[2,5]", "mitigator.detector=l2"]]
# Every preset, every on/off combination of SFP's components, and each knob; test-time registers beside two.
REGISTERS = ["registers=on", "registers.neurons=[[1,3],[2,5]]"]
VARIANTS = ([[f"method={name}"] for name in PRESETS]
            + [["method=sfp"] + [f"{group}={state}" for group, state in combo.items()] for combo in COMBINATIONS]
            + [["method=sfp", *knob] for knob in KNOBS]
            + [["method=sfp", *REGISTERS], ["method=naclip", *REGISTERS]])


def _same(a, b) -> bool:  # NaN cells (classes absent from the images) compare equal
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def _compose(tmp_path, *overrides):
    return sfp.compose(tiny_overrides(tmp_path) + ["datasets.voc21.short_side=40", *overrides])


def test_every_variant_computes_the_same_features_in_a_shared_trunk_as_alone(tmp_path):
    runs = [_compose(tmp_path, *variant, f"stats.enabled={stats}")
            for variant in VARIANTS for stats in ("true", "false")]
    model = sfp.build_model(runs[0])
    methods = [build_method(model.tower, run).eval() for run in runs]
    queries = model.encode_queries([["cat"], ["dog"], ["sky", "grass"]], "single")
    for method, run in zip(methods, runs):
        method.registers = build_registers(run, model.tower)[0]
        method.bind_queries(queries, background=True)  # for the methods that read the class text
    crops = torch.randn(3, 3, 64, 96)
    with torch.no_grad():
        alone = [method.forward_features(crops) for method in methods]
        traces = model.tower.run_plans(crops, [method.plan() for method in methods])
        together = [method.features_from_trace(trace) for method, trace in zip(methods, traces)]
    for variant, (features, aux), (shared, shared_aux) in zip(runs, alone, together):
        # NaN where the release gives NaN (zeroed outliers on this 4 x 6 grid leave enhancer rows all -inf)
        torch.testing.assert_close(shared, features, rtol=0, atol=0, equal_nan=True, msg=str(variant))
        for name, values in aux.get("layer_stats", {}).items():
            assert torch.equal(values.nan_to_num(-1), shared_aux["layer_stats"][name].nan_to_num(-1))
    distinct = {id(tokens) for trace in traces for tokens in trace.tokens}
    assert len(distinct) < sum(len(trace.tokens) for trace in traces) / 4  # most blocks ran once


@pytest.mark.parametrize("stats", ["true", "false"])
def test_grouped_and_separate_runs_of_every_preset_and_component_combination_are_identical(tiny_voc, tmp_path,
                                                                                           stats):
    runs = [_compose(tmp_path, *variant, f"stats.enabled={stats}", "save_predictions=true") for variant in VARIANTS]
    assert len(group_indices(runs)) == 1  # one pass for all of them
    grouped = run_jobs(runs, [tmp_path / "grouped" / str(i) for i in range(len(runs))])
    separate = run_jobs(runs, [tmp_path / "separate" / str(i) for i in range(len(runs))], grouped=False)
    assert sum(r.ok for r in separate) >= len(runs) - 1
    for i, (a, b) in enumerate(zip(grouped, separate)):
        if not b.ok:  # a variant that fails alone (NaN features) fails the same way in the pass
            assert not a.ok and str(a.error) == str(b.error)
            continue
        assert a.ok, a.error
        assert a.record["evaluation"]["jobs_in_pass"] == len(runs) and b.record["evaluation"]["jobs_in_pass"] == 1
        for key in ("metrics", "outlier_stats", "protocol", "class_files", "config"):
            assert _same(a.record[key], b.record[key]), (i, key)
        pngs = sorted((a.output_dir / "predictions" / "voc21").glob("*.png"))
        assert len(pngs) == 3
        for png in pngs:
            assert png.read_bytes() == (b.output_dir / "predictions" / "voc21" / png.name).read_bytes()


def test_a_pass_holds_at_most_max_variants_jobs_and_a_bad_limit_is_refused(tmp_path):
    runs = [_compose(tmp_path, f"mitigator.top_k={k}") for k in (1, 2, 3, 4, 5)]
    assert group_indices(runs, max_variants=2) == [[0, 1], [2, 3], [4]]
    for bad in (0, -1, 1.5):
        with pytest.raises(ConfigError, match="max_variants"):
            group_indices(runs, max_variants=bad)


def test_variants_that_differ_after_the_features_share_them(tmp_path):
    base = _compose(tmp_path)
    runs = [base] + [_compose(tmp_path, override) for override in (
        "inference.templates=imagenet80", "datasets.voc21.prob_thd=0.3", "inference.pamr=true", "mitigator.top_k=3")]
    assert len(group_indices(runs)) == 1
    assert len({feature_key(run) for run in runs}) == 2  # only top_k changes the features


def test_what_must_be_equal_in_a_pass_is_everything_but_the_per_variant_settings(tmp_path):
    base = _compose(tmp_path)
    # Per-variant settings keep the group; one representative change of each listed key.
    same = ["method=naclip", "mitigator=off", "enhancer.temperature=0.5", "integrator=off", "aggregation.beta=0.2",
            "stats.enabled=false", "tracker.project=other", "save_predictions=true", "resume=true",
            "backbone.layers.detect=9", "backbone.label=Tiny", "inference.templates=sfp15", "inference.pamr=true",
            "inference.check_finite=false", "paths.output_dir=/elsewhere", "datasets.voc21.logit_scale=50",
            "datasets.voc21.prob_thd=0.2", "datasets.voc21.area_thd=0.1", "vfm=tiny_dinov2", "registers=on"]
    for override in same:
        assert group_key(_compose(tmp_path, override)) == group_key(base), override
    assert {key.split(".")[0] for key in PER_VARIANT_KEYS} <= {o.split("=")[0].split(".")[0] for o in same} | {
        "preset", "paths", "inference", "backbone"}
    # Anything that changes the weights, images, windows or numerics starts another pass.
    other = ["seed=1", "inference.crop=48", "inference.stride=16", "inference.precision=bfloat16",
             "inference.batch_size=2", "datasets.voc21.short_side=48", "datasets.voc21.max_images=2",
             "backbone.pretrained=other", "datasets.voc21.class_names=voc20", "datasets=[voc21,voc20]"]
    for override in other:
        assert group_key(_compose(tmp_path, override)) != group_key(base), override


def test_an_invalid_job_fails_alone_and_the_others_finish(tiny_voc, tmp_path):
    good = _compose(tmp_path)
    invalid = sfp.compose_config(tiny_overrides(tmp_path) + ["method=naclip", "method.sigma=-1"])
    results = run_jobs([good, invalid, _compose(tmp_path, "mitigator=off")],
                       [tmp_path / "a", tmp_path / "b", tmp_path / "c"])
    assert [r.ok for r in results] == [True, False, True]
    assert "method.sigma" in str(results[1].error)
    assert not (tmp_path / "b" / "results.json").exists()
    assert all(r.record["status"] == "complete" and r.record["evaluation"]["jobs_in_pass"] == 2
               for r in (results[0], results[2]))


def test_a_variant_with_non_finite_features_fails_alone_in_its_pass(tiny_voc, tmp_path, monkeypatch):
    from sfp.methods.maskclip import MaskCLIPDense

    monkeypatch.setattr(MaskCLIPDense, "features_from_trace",
                        lambda self, trace: (torch.full((trace.tokens[0].shape[0], 16, 32), float("nan")), {}))
    runs = [_compose(tmp_path), _compose(tmp_path, "method=maskclip"), _compose(tmp_path, "method=clip")]
    grouped = run_jobs(runs, [tmp_path / str(i) for i in range(3)])
    assert [r.ok for r in grouped] == [True, False, True]
    assert "non-finite dense features" in str(grouped[1].error)
    separate = run_jobs([runs[0], runs[2]], [tmp_path / "s0", tmp_path / "s2"], grouped=False)
    assert _same(grouped[0].record["metrics"], separate[0].record["metrics"])
    assert _same(grouped[2].record["metrics"], separate[1].record["metrics"])


def test_resume_skips_the_complete_jobs_of_a_group_and_evaluates_the_rest(tiny_voc, tmp_path):
    runs = [_compose(tmp_path, "resume=true", f"mitigator.top_k={k}") for k in (1, 2, 3)]
    dirs = [tmp_path / str(i) for i in range(3)]
    assert all(r.ok for r in run_jobs(runs[:2], dirs[:2]))
    finished = (dirs[0] / "results.json").stat().st_mtime_ns
    interrupted = read_results(dirs[1] / "results.json")  # job 1 stopped after a dataset: a partial record
    write_json_atomic(dirs[1] / "results.json", {**interrupted, "status": "partial"})
    results = run_jobs(runs, dirs)
    assert [r.resumed for r in results] == [True, False, False]
    assert (dirs[0] / "results.json").stat().st_mtime_ns == finished
    assert results[1].record["evaluation"]["jobs_in_pass"] == 2
    assert _same(read_results(dirs[1] / "results.json")["metrics"], interrupted["metrics"])
    assert all(read_results(d / "results.json")["status"] == "complete" for d in dirs)


def _sweep(tmp_path, overrides, *extra, flags=()):
    sweep = tmp_path / "sweep"
    result = run_main(*flags, "-m", "mitigator=on,off", "datasets.voc21.short_side=40,48", *overrides,
                      f"hydra.sweep.dir={sweep}", *extra)
    assert result.returncode == 0, result.stderr[-3000:]
    records = [read_results(p) for p in sweep.glob("*/results.json")]
    return result, {(r["choices"]["mitigator"], r["config"]["datasets"]["voc21"]["short_side"]): r for r in records}


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["grouped", "local_parallel", "submitit_local"])
def test_the_sweep_launcher_groups_jobs_and_its_fallback_flag_runs_them_one_by_one(tiny_voc, tmp_path, launcher):
    _, overrides = tiny_voc
    overrides = [o for o in overrides if not o.startswith("datasets.voc21.short_side")]
    choose, flags = [f"hydra/launcher={launcher}"], []
    if launcher == "submitit_local":  # the submitit path of `slurm`, with submitit's local executor
        extra = tmp_path / "extra-conf"
        (extra / "hydra" / "launcher").mkdir(parents=True)
        (extra / "hydra" / "launcher" / "grouped_local.yaml").write_text(
            "defaults:\n  - sfp_grouping_base\n  - submitit_local@inner\n")
        choose, flags = ["hydra/launcher=grouped_local"], ["--config-dir", str(extra)]
    grouped_out, grouped = _sweep(tmp_path / "g", overrides, *choose, flags=flags)
    separate_out, separate = _sweep(tmp_path / "s", overrides, *choose, "hydra.launcher.group=false", flags=flags)
    assert len(grouped) == len(separate) == 4
    assert "4 jobs in 2 passes" in grouped_out.stderr + grouped_out.stdout
    if launcher != "submitit_local":  # submitit's tasks print into their own log files
        assert grouped_out.stdout.count("results: ") == 4  # each job's table, as one run prints it
    for key, record in grouped.items():
        assert record["status"] == "complete" and record["evaluation"]["jobs_in_pass"] == 2
        assert separate[key]["evaluation"]["jobs_in_pass"] == 1
        assert _same(record["areas"], separate[key]["areas"]) and _same(record["metrics"], separate[key]["metrics"])


def test_the_readme_counts_the_jobs_and_passes_of_every_named_experiment():
    import re

    from sfp.assembly import sweep_jobs
    from sfp.config.locations import experiments_dir

    from tests.helpers import REPO

    rows = re.findall(r"^\| `(\w+)` \| .*? \| (\d+) \| (\d+) \|$", (REPO / "README.md").read_text(), re.M)
    assert {name for name, _, _ in rows} == {p.stem for p in (experiments_dir() / "experiment").glob("*.yaml")}
    for name, jobs, passes in rows:
        runs = [sfp.compose(job) for job in sweep_jobs([f"+experiment={name}"])]
        assert (len(runs), len(group_indices(runs))) == (int(jobs), int(passes)), name
