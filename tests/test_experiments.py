"""The named studies in experiments/experiment/: each composes, fixes its grid in hydra.sweeper.params, and
every job of that grid is a valid run config; one real sweep (`-m +experiment=ablation_components`) on the
tiny model, from the repository root and from another working directory."""
from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from tests.helpers import REPO

import sfp
from sfp.config import catalog
from sfp.config.searchpath import experiments_dir_for
from sfp.tracking.results_store import read_results

REAL_DATASETS = catalog.benchmarks()
PRESETS = sorted(catalog.presets())  # what `method: glob(*)` sweeps
ON_OFF = ["on", "off"]

# name -> {swept key: values, as each job's override spells them}
GRIDS: Dict[str, Dict[str, List[str]]] = {
    "main_table": {"method": PRESETS, "backbone": ["vit_b16", "vit_l14"]},
    "ablation_components": {"mitigator": ON_OFF, "enhancer": ON_OFF, "integrator": ON_OFF},
    "ablation_detector": {"mitigator.detector": ["som", "l2", "lof"]},
    "ablation_registers": {"mitigator": ON_OFF, "registers": ON_OFF},
    "sweep_top_k": {"mitigator.top_k": ["1", "3", "5", "10", "20", "50"]},
    "sweep_cls_scale": {"mitigator.cls_scale": ["1.0", "1.25", "1.5", "2.0", "3.0"]},
    "sweep_beta": {"aggregation.beta": ["0.2", "0.3", "0.4", "0.5", "0.6"]},
    "sweep_temperature": {"enhancer.temperature": ["1.0", "2.0", "3.0", "4.0", "5.0"]},
    "sweep_layers": {"backbone.layers.detect": ["8", "9", "10"],
                     "integrator.layers": ["[3,4,5,6,7,8,9]", "[1,2,3,4,5,6,7,8,9]", "[5,6,7,8,9]"]},
    "backbones": {"backbone": ["vit_b16", "vit_l14"]},
    "precision": {"method": PRESETS, "inference.precision": ["float32", "bfloat16", "float16"]},
}
JOBS = {"main_table": 2 * len(PRESETS), "ablation_components": 8, "ablation_detector": 3,
        "ablation_registers": 4, "sweep_top_k": 6, "sweep_cls_scale": 5,
        "sweep_beta": 5, "sweep_temperature": 5, "sweep_layers": 9, "backbones": 2, "precision": 3 * len(PRESETS)}


def sweep_jobs(cfg, cli: List[str] = ()) -> List[List[str]]:
    """The jobs Hydra's basic sweeper runs: the config's params, then the command line (later keys win)."""
    # glob(*) lists a group's options, which needs Hydra's config loader: expand it as Hydra does (sorted)
    arguments = [f"{key}={','.join(sorted(catalog.presets())) if value == 'glob(*)' else value}"
                 for key, value in cfg.hydra.sweeper.params.items()] + list(cli)
    (batch,) = BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(arguments), None)
    return batch


def _spelled(value) -> str:
    """A composed value as an override spells it: 1.0, som, [3,4,5]."""
    if OmegaConf.is_list(value):
        return "[" + ",".join(str(v) for v in value) + "]"
    return str(getattr(value, "value", value))


def test_hydra_discovers_the_search_path_plugin():
    from hydra.core.plugins import Plugins
    from hydra.plugins.search_path_plugin import SearchPathPlugin

    names = [plugin.__name__ for plugin in Plugins.instance().discover(SearchPathPlugin)]
    assert "SFPExperimentsSearchPathPlugin" in names, (
        "hydra_plugins/sfp_searchpath is not importable: install the project (pyproject lists hydra_plugins*) "
        "or run from the repository root")


def test_the_experiment_files_are_exactly_the_named_studies():
    files = sorted(p.stem for p in (REPO / "experiments" / "experiment").glob("*.yaml"))
    assert files == sorted(GRIDS)
    assert all(name in (REPO / "experiments" / "README.md").read_text() for name in GRIDS)


@pytest.mark.parametrize("name", sorted(GRIDS))
def test_an_experiment_composes_with_its_fixed_parts_and_its_grid(name):
    cfg = sfp.compose_config([f"+experiment={name}"], return_hydra_config=True)
    # a silently ignored `+experiment` (group not on the search path) would add a plain key instead
    assert cfg.hydra.runtime.choices.get("experiment") == name
    assert list(cfg.datasets) == REAL_DATASETS
    assert cfg.tracker.group == name
    assert (cfg.backbone.name, cfg.method.name) == ("vit_b16", "sfp")
    assert f"/experiments/{name}/" in cfg.hydra.sweep.dir

    jobs = sweep_jobs(cfg)
    assert len(jobs) == JOBS[name]
    grid = GRIDS[name]
    expected = [[f"{key}={value}" for key, value in zip(grid, combo)] for combo in itertools.product(*grid.values())]
    assert jobs == expected
    assert len(cfg.hydra.sweeper.params.items()) == len(grid)


@pytest.mark.parametrize("name", sorted(set(GRIDS) - {"main_table", "precision"}))
def test_every_job_of_an_experiment_is_a_valid_run_config(name):
    cfg = sfp.compose_config([f"+experiment={name}"], return_hydra_config=True)
    for job in sweep_jobs(cfg):
        job_cfg = sfp.compose_config([*job, f"+experiment={name}"], return_hydra_config=True)  # validates
        for override in job:
            key, value = override.split("=", 1)
            if "." in key:  # a value
                assert _spelled(OmegaConf.select(job_cfg, key)) == value
            else:  # a group option
                assert job_cfg.hydra.runtime.choices[key] == value
                if key in ("mitigator", "enhancer", "integrator"):
                    assert job_cfg[key].enabled == (value == "on")
        if name == "ablation_components":
            assert job_cfg.aggregation.enabled and job_cfg.method.name == "sfp"
        if name == "sweep_layers":  # the range is explicit; the default blocks stay SFP's for the depth
            assert job_cfg.backbone.layers.integrate is None


def test_main_table_jobs_compose_the_swept_preset_and_backbone():
    cfg = sfp.compose_config(["+experiment=main_table"], return_hydra_config=True)
    for job in sweep_jobs(cfg)[::5]:  # a sample: composing all 16 adds seconds and no coverage
        job_cfg = sfp.compose_config([*job, "+experiment=main_table"], return_hydra_config=True)
        method, backbone = (override.split("=")[1] for override in job)
        assert (job_cfg.hydra.runtime.choices["method"], job_cfg.backbone.name) == (method, backbone)
        # the swept preset's own component switches apply, not the experiment's default preset's
        assert job_cfg.mitigator.enabled == (catalog.presets()[method].method == "sfp")
        assert list(job_cfg.datasets) == REAL_DATASETS


def test_precision_jobs_compose_the_swept_preset_at_each_precision():
    cfg = sfp.compose_config(["+experiment=precision"], return_hydra_config=True)
    for job in sweep_jobs(cfg)[::7]:  # a sample across presets and precisions
        job_cfg = sfp.compose_config([*job, "+experiment=precision"], return_hydra_config=True)
        method, precision = (override.split("=")[1] for override in job)
        assert job_cfg.hydra.runtime.choices["method"] == method
        assert _spelled(job_cfg.inference.precision) == precision
        assert job_cfg.backbone.name == "vit_b16" and list(job_cfg.datasets) == REAL_DATASETS


def test_command_line_overrides_win_over_the_experiment_and_replace_a_swept_key():
    overrides = ["+experiment=main_table", "backbone=tiny", "datasets=[voc21]", "tracker.group=mine"]
    cfg = sfp.compose_config(overrides, return_hydra_config=True)
    assert (cfg.backbone.name, list(cfg.datasets), cfg.tracker.group) == ("tiny", ["voc21"], "mine")
    # a key given on the command line replaces the same key of hydra.sweeper.params: one value, not a sweep
    jobs = sweep_jobs(cfg, ["backbone=tiny", "datasets=[voc21]"])
    assert len(jobs) == len(PRESETS) and all("backbone=tiny" in job for job in jobs)
    assert all("backbone=vit_b16" not in job and "backbone=vit_l14" not in job for job in jobs)
    # and a swept value on the command line replaces the experiment's values
    assert len(sweep_jobs(cfg, ["method=clip,sfp"])) == 4


def test_ablation_components_keeps_aggregation_on_under_another_preset():
    cfg = sfp.compose(["+experiment=ablation_components", "method=sfp_early"])
    assert cfg.aggregation.enabled and not cfg.enhancer.enabled  # the experiment pins aggregation only


def test_the_search_path_is_added_only_for_sfps_config_folder(tmp_path):
    assert experiments_dir_for(f"file://{REPO / 'conf'}") == REPO / "experiments"
    assert experiments_dir_for(str(REPO / "conf")) == REPO / "experiments"
    assert experiments_dir_for(f"file://{tmp_path}") is None
    assert experiments_dir_for("pkg://some_app.conf") is None


def _run_experiment(cwd: Path, sweep: Path, overrides: List[str], *extra: str):
    return subprocess.run(
        [sys.executable, str(REPO / "main.py"), "-m", "+experiment=ablation_components", *overrides,
         f"hydra.sweep.dir={sweep}", *extra],
        cwd=cwd, capture_output=True, text=True, timeout=300)


def test_ablation_components_runs_as_a_multirun_of_eight_jobs_on_the_tiny_model(tiny_voc, tmp_path):
    _, overrides = tiny_voc
    sweep = tmp_path / "sweep"
    result = _run_experiment(REPO, sweep, overrides)
    assert result.returncode == 0, result.stderr[-3000:]

    records = [read_results(path) for path in sorted(sweep.glob("*/results.json"))]
    assert len(records) == 8
    choices = {(r["choices"]["mitigator"], r["choices"]["enhancer"], r["choices"]["integrator"]) for r in records}
    assert choices == set(itertools.product(ON_OFF, ON_OFF, ON_OFF))
    for record in records:
        assert record["status"] == "complete" and record["choices"]["experiment"] == "ablation_components"
        assert record["choices"]["aggregation"] == "on" and record["choices"]["backbone"] == "tiny"
        assert list(record["metrics"]) == ["voc21"] and record["metrics"]["voc21"]["n_images"] == 3
        assert record["config"]["tracker"]["group"] == "ablation_components"


def test_the_experiment_group_is_found_when_launched_from_another_directory(tiny_voc, tmp_path):
    _, overrides = tiny_voc
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    sweep = tmp_path / "sweep"
    # two jobs are enough to show the group and its grid are found; the command line narrows the grid
    result = _run_experiment(elsewhere, sweep, overrides, "mitigator=off", "enhancer=off")
    assert result.returncode == 0, result.stderr[-3000:]
    records = [read_results(path) for path in sorted(sweep.glob("*/results.json"))]
    assert sorted(r["choices"]["integrator"] for r in records) == ["off", "on"]
    assert all(r["choices"]["experiment"] == "ablation_components" for r in records)
    assert {(r["choices"]["mitigator"], r["choices"]["enhancer"]) for r in records} == {("off", "off")}
    assert not (elsewhere / "outputs").exists()  # paths.output_dir is absolute in tiny_overrides
