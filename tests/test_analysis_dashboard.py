"""W&B dashboards as code: each named experiment's workspace and report are built offline, and every key their
panels read is one the tracker really logs for that study (read back from an offline `.wandb` run)."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

import sfp
from omegaconf import open_dict

from analysis.cli import main as analysis_main
from analysis.dashboard import (
    build_dashboard, detects_outliers, specification, study_from_experiment, study_from_group,
)
from sfp.assembly import run_choices, sweep_jobs
from sfp.runner import run_job
from sfp.tracking import logged_keys
from tests.data_layouts_fixture import build_layout
from tests.helpers import REPO, tiny_overrides
from tests.wandb_records import read_offline_run

pytest.importorskip("wandb_workspaces")
EXPERIMENTS = sorted(p.stem for p in (REPO / "experiments" / "experiment").glob("*.yaml"))


def _overrides(root: Path):
    """The tiny model on a tiny VOC tree, logging to an offline W&B run."""
    return [o for o in tiny_overrides(root) if o != "tracker=none"] + [
        "datasets.voc21.short_side=40", "tracker.mode=offline", "tracker.num_overlays=2"]


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    """Per experiment: the dashboard built for it and what one of its jobs logged (the first of its grid)."""
    root = tmp_path_factory.mktemp("dashboards")
    build_layout("voc21", root / "data", n=2)
    out = {}
    for name in EXPERIMENTS:
        overrides = _overrides(root)
        dashboard = build_dashboard("team", "sfp", study_from_experiment(name, overrides))
        jobs = sweep_jobs([f"+experiment={name}", *overrides])
        # the first job of the grid, and the first that detects outliers (the heat map's only source)
        chosen = [jobs[0]] + [next(j for j in jobs if detects_outliers(sfp.compose(j)))][:1]
        runs = []
        for i, job in enumerate(dict.fromkeys(map(tuple, chosen))):
            cfg = sfp.compose_config(list(job), return_hydra_config=True)
            choices = run_choices(cfg.hydra.runtime.choices)
            with open_dict(cfg):
                del cfg["hydra"]
            run_job(cfg, root / name / str(i), choices=choices)
            (run_dir,) = (root / name / str(i) / "wandb").glob("offline-run-*")
            runs.append(_finished_run(run_dir))
        out[name] = (dashboard, runs)
    return out


def _finished_run(run_dir: Path, timeout: float = 30.0):
    """The offline run once W&B has written it to the end (its exit record)."""
    deadline = time.monotonic() + timeout
    while True:
        run = read_offline_run(run_dir)
        if run.exit_code is not None or time.monotonic() > deadline:
            return run
        time.sleep(0.2)


def _config_has(config, dotted: str) -> bool:
    if dotted in config:  # a flat column such as mitigator_choice
        return True
    node = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_panel_of_an_experiments_dashboard_reads_a_key_its_runs_log(logged, name):
    dashboard, runs = logged[name]
    # media and tables are logged as one key holding an object (the reader shows its fields as key.field)
    written = {key.split(".", 1)[0] for run in runs for key in [*(k for row in run.history for k in row),
                                                                 *run.summary]}
    read = dashboard.keys()
    assert read["logged"] and read["config"]
    dead = [key for key in read["logged"] if key not in written]
    assert dead == [], f"{name}: panels read keys no run logs"
    missing = [key for key in read["config"] if not all(_config_has(run.config, key) for run in runs)]
    assert missing == [], f"{name}: panels read config keys the runs do not have"
    assert {run.group for run in runs} == {dashboard.study.group}  # the panels are filtered to the runs' group


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_the_panels_follow_from_what_the_experiment_varies(logged, name):
    dashboard, _ = logged[name]
    kinds = {(p.kind, p.groupby or p.x) for p in dashboard.panels()}
    for axis in dashboard.study.axes:
        if axis.kind == "choice":  # grouped bar charts per <group>_choice, and the runs table grouped by it
            assert ("bar", f"{axis.name}_choice") in kinds and axis.column in dashboard.runs_table_groupby
        elif axis.numeric:  # mIoU against the swept key
            assert ("scatter", axis.name) in kinds
        else:
            assert ("bar", axis.name) in kinds
    if dashboard.study.axes:
        assert any(p.kind == "parallel" for p in dashboard.panels())
    layer = logged_keys.LAYER.key(dataset="voc21")
    assert {p.metrics[0] for p in dashboard.panels() if p.kind == "line" and p.x == layer} == {
        logged_keys.LAYER_STAT.key(dataset="voc21", statistic=s) for s in logged_keys.statistics()}
    assert {p.metrics[0] for p in dashboard.panels() if p.kind in ("media", "table")} == {
        logged_keys.HEATMAP.key(dataset="voc21"), logged_keys.OVERLAYS.key(dataset="voc21"),
        logged_keys.PER_CLASS_IOU.key(dataset="voc21")}


def test_the_studies_vary_what_their_experiment_files_sweep():
    components = study_from_experiment("ablation_components")
    assert [(a.name, a.kind, a.values) for a in components.axes] == [
        (g, "choice", ("on", "off")) for g in ("mitigator", "enhancer", "integrator")]
    assert components.group == "ablation_components" and len(components.datasets) == 8
    top_k = study_from_experiment("sweep_top_k").axes
    assert [(a.name, a.kind, a.numeric) for a in top_k] == [("mitigator.top_k", "field", True)]
    main = {a.name: a for a in study_from_experiment("main_table").axes}
    assert main["backbone"].values == ("vit_b16", "vit_l14") and "sfp" in main["method"].values
    precision = {a.name: a for a in study_from_experiment("precision").axes}
    assert not precision["inference.precision"].numeric  # a bar chart per precision, not a scatter


def test_every_key_a_dashboard_reads_comes_from_the_registry_of_logged_keys():
    dashboard = build_dashboard("team", "sfp", study_from_experiment("ablation_components"))
    templates = list(logged_keys.REGISTRY.values())
    for key in dashboard.keys()["logged"]:
        assert any(t.match(key) for t in templates if t.where != "config"), key
    for key in dashboard.keys()["config"]:  # choice columns from the registry, or config fields of the schema
        assert logged_keys.CHOICE.match(key) or "." in key, key


def test_dry_run_writes_the_specifications_and_sends_nothing(tmp_path, monkeypatch, capsys):
    import wandb

    def no_network(*_, **__):
        raise AssertionError("the dry run must not reach W&B")

    monkeypatch.setattr(wandb, "Api", no_network)
    out = tmp_path / "dash" / "components.json"
    assert analysis_main(["dashboard", "team/sfp", "--experiment", "ablation_components", "--dry-run",
                          str(out)]) == 0
    printed = capsys.readouterr().out
    assert "team/sfp, group 'ablation_components'" in printed and "[parallel]" in printed and str(out) in printed
    spec = json.loads(out.read_text())
    assert spec["workspace"]["displayName"] == "sfp: ablation_components"
    assert spec["workspace"]["entity"] == "team" and spec["workspace"]["project"] == "sfp"
    runset = json.dumps(spec["workspace"])
    assert '"name": "group"' in runset and '"value": "ablation_components"' in runset  # filtered to the group
    assert spec["report"]["displayName"] == "sfp: ablation_components"
    assert spec["keys"]["config"][:3] == ["enhancer_choice", "integrator_choice", "mitigator_choice"]


def test_without_an_api_key_it_refuses_to_save_and_never_prompts(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", None)  # a prompt would fail on reading stdin
    assert analysis_main(["dashboard", "team/sfp", "--experiment", "sweep_top_k"]) == 2
    error = capsys.readouterr().err
    assert "no W&B API key" in error and "--dry-run" in error
    assert analysis_main(["dashboard", "not-a-project", "--group", "g", "--dry-run", str(tmp_path / "x")]) == 2
    assert "ENTITY/PROJECT" in capsys.readouterr().err


def test_a_group_of_unknown_design_gets_the_panels_every_study_has(tmp_path, capsys):
    study = study_from_group("sweep-7f3a", ["voc21", "ade20k"], ["mitigator.top_k"])
    dashboard = build_dashboard("team", "sfp", study)
    assert ("scatter", "mitigator.top_k") in {(p.kind, p.x) for p in dashboard.panels()}
    plain = build_dashboard("team", "sfp", study_from_group("sweep-7f3a", ["voc21"]))
    assert [p.groupby for p in plain.panels() if p.kind == "bar"] == ["method_choice"]
    assert specification(plain)["study"]["group"] == "sweep-7f3a"
    assert analysis_main(["dashboard", "team/sfp", "--group", "sweep-7f3a", "--datasets", "voc21",
                          "--dry-run", str(tmp_path / "g.json")]) == 0
    assert json.loads((tmp_path / "g.json").read_text())["study"]["datasets"] == ["voc21"]


def test_with_an_api_key_it_saves_the_workspace_and_the_report_and_prints_their_urls(monkeypatch, capsys):
    import analysis.dashboard as dashboard_module
    import sfp.tracking

    saved = []

    class Saved:
        def __init__(self, kind, url):
            self.kind, self.url = kind, url

        def save(self):
            saved.append(self.kind)
            return self

    monkeypatch.setattr(sfp.tracking, "has_wandb_credentials", lambda *_: True)
    monkeypatch.setattr(dashboard_module, "to_workspace", lambda d: Saved("workspace", "https://w/ws"))
    monkeypatch.setattr(dashboard_module, "to_report",
                        lambda d, resolve_project=True: Saved("report" if resolve_project else "?", "https://w/r"))
    assert analysis_main(["dashboard", "team/sfp", "--experiment", "sweep_top_k"]) == 0
    out = capsys.readouterr().out
    assert saved == ["workspace", "report"]  # the report's run sets name the project when saved
    assert "workspace: https://w/ws" in out and "report: https://w/r" in out
