"""The W&B path without network: runs shaped like the public API's Run objects (built from the REAL records of
`analysis_runs_fixture` the way the tracker logs them), pulled into the cache file, and tables read back
offline that equal the tables of the local folder."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Dict, List, Optional

import pandas as pd
import pytest


from analysis import components_table, load_runs, load_wandb_runs, main_table, pull_runs, read_cache, run_to_record
from analysis.cli import main as cli
from analysis.wandb_pull import CACHE_FORMAT, cache_path
from sfp.runner import tracker_config
from sfp.tracking.results_store import read_results

PROJECT = "sfp-lab/sfp"
GROUP = "sweep-7f3a"


class Summary:
    """Like wandb's HTTPSummary: dict-like, with the raw values in `_json_dict`."""

    def __init__(self, values: Dict[str, Any]):
        self._json_dict = values

    def __getitem__(self, key):
        return self._json_dict[key]

    def keys(self):
        return self._json_dict.keys()


class FakeRun:
    """The attributes of `wandb.apis.public.Run` that the puller reads."""

    def __init__(self, run_id: str, name: str, group: Optional[str], state: str, config: Dict[str, Any],
                 summary: Dict[str, Any]):
        self.id, self.name, self.group, self.state = run_id, name, group, state
        self.config = config
        self.summary = Summary(summary)


class FakeApi:
    """`wandb.Api().runs` (wandb 0.31's signature), answering from a list and recording each query."""

    def __init__(self, runs: List[FakeRun]):
        self._runs = runs
        self.queries: List[tuple] = []

    def runs(self, path, filters=None, order="+created_at", per_page=50, include_sweeps=False, lazy=True):
        self.queries.append((path, filters))
        assert lazy is False  # one listing with configs and summaries, not a query per run
        group = (filters or {}).get("group")
        return [r for r in self._runs if group is None or r.group == group]


class NoNetworkApi:
    def runs(self, *args, **kwargs):
        raise AssertionError("the cache should have been used; no W&B query expected")


def logged_summary(record: Dict[str, Any]) -> Dict[str, Any]:
    """What the tracker puts in a run's summary for one results record."""
    summary: Dict[str, Any] = {}
    for dataset, metrics in record["metrics"].items():
        for key in ("miou", "aacc", "macc", "n_images"):
            summary[f"{key}/{dataset}"] = metrics[key]
        summary[f"per_class_iou/{dataset}"] = {"_type": "table-file", "path": f"media/table/{dataset}.json"}
    summary["miou/mean"] = sum(m["miou"] for m in record["metrics"].values()) / len(record["metrics"])
    return summary


def fake_runs(runs_dir: Path, group: Optional[str] = GROUP) -> List[FakeRun]:
    runs = []
    for i, path in enumerate(sorted(runs_dir.rglob("results.json"))):
        record = read_results(path)
        runs.append(FakeRun(f"run{i:04d}", path.parent.name, group, "finished",
                            tracker_config(record["config"], record["choices"]), logged_summary(record)))
    return runs


def comparable(table) -> pd.DataFrame:
    return table.values.round(12)


def test_pulled_runs_are_cached_and_give_the_same_tables_offline(analysis_runs, tmp_path):
    api = FakeApi(fake_runs(analysis_runs / "components") + fake_runs(analysis_runs / "presets", group="other"))
    cache = pull_runs(PROJECT, GROUP, api=api, cache_dir=tmp_path)
    assert cache == tmp_path / "sfp-lab__sfp__sweep-7f3a.json" and api.queries == [(PROJECT, {"group": GROUP})]

    data = json.loads(cache.read_text())
    assert data["format"] == CACHE_FORMAT and data["version"] == 1 and data["path"] == PROJECT
    assert data["group"] == GROUP and len(data["runs"]) == 8
    first = data["runs"][0]
    assert set(first) >= {"config", "choices", "metrics", "status", "wandb", "run_dir"}
    assert first["choices"]["method"] == "sfp" and "method_choice" not in first["config"]
    assert set(first["metrics"]) == {"voc21", "ade20k"} and isinstance(first["metrics"]["voc21"]["n_images"], int)
    assert first["status"] == "complete" and first["wandb"]["group"] == GROUP
    assert first["run_dir"] == f"wandb:{PROJECT}/{first['wandb']['id']}"

    offline = load_wandb_runs(PROJECT, GROUP, api=NoNetworkApi(), cache_dir=tmp_path)
    from_wandb = components_table(offline)
    from_folder = components_table(load_runs(analysis_runs / "components"))
    pd.testing.assert_frame_equal(comparable(from_wandb), comparable(from_folder))
    pd.testing.assert_frame_equal(from_wandb.counts, from_folder.counts)


def test_the_main_table_from_wandb_equals_the_one_from_the_folder(analysis_runs, tmp_path):
    api = FakeApi(fake_runs(analysis_runs / "presets") + fake_runs(analysis_runs / "components"))
    runs = load_wandb_runs(PROJECT, GROUP, api=api, cache_dir=tmp_path)
    local = load_runs([analysis_runs / "presets", analysis_runs / "components"])
    labels = {"tiny": "ViT-B/16"}
    pd.testing.assert_frame_equal(comparable(main_table(runs, backbone_labels=labels)),
                                  comparable(main_table(local, backbone_labels=labels)))


def test_the_cache_is_read_until_a_refresh_is_asked_for(analysis_runs, tmp_path):
    api = FakeApi(fake_runs(analysis_runs / "detector"))
    load_wandb_runs(PROJECT, GROUP, api=api, cache_dir=tmp_path)
    load_wandb_runs(PROJECT, GROUP, api=api, cache_dir=tmp_path)
    assert len(api.queries) == 1
    api._runs = api._runs[:1]
    refreshed = load_wandb_runs(PROJECT, GROUP, api=api, refresh=True, cache_dir=tmp_path)
    assert len(api.queries) == 2 and refreshed["run_dir"].nunique() == 1


def test_the_fake_api_has_the_real_signature():
    import inspect

    import wandb

    assert list(inspect.signature(FakeApi.runs).parameters) == list(inspect.signature(wandb.Api.runs).parameters)


def test_public_api_run_objects_built_from_server_data_convert_to_records(tmp_path, monkeypatch):
    from wandb.apis.public import Run

    monkeypatch.setenv("WANDB_DIR", str(tmp_path))  # Run() makes a folder for its files there
    config = {"method": {"name": "sfp"}, "mitigator": {"enabled": True, "top_k": 10}, "seed": 0}
    choices = {"method": "sfp", "mitigator": "on", "backbone": "vit_b16"}
    server_config = {k: {"value": v, "desc": None} for k, v in tracker_config(config, choices).items()}
    server_config["_wandb"] = {"value": {"cli_version": "0.31.0"}, "desc": None}
    attrs = {"name": "ab12cd34", "displayName": "mitigator.top_k=10", "state": "crashed", "group": GROUP,
             "config": json.dumps(server_config),
             "summaryMetrics": json.dumps({"miou/voc21": 61.25, "aacc/voc21": 90.5, "macc/voc21": 70.0,
                                           "n_images/voc21": 1449.0, "miou/ade20k": "NaN", "miou/mean": 61.25,
                                           "_runtime": 12.0, "per_class_iou/voc21": {"_type": "table-file"}})}
    run = Run(None, "sfp-lab", "sfp", "ab12cd34", attrs=attrs)
    record = run_to_record(run, PROJECT)
    assert record["config"] == config and record["choices"] == choices
    assert record["metrics"] == {"voc21": {"miou": 61.25, "aacc": 90.5, "macc": 70.0, "n_images": 1449},
                                 "ade20k": {"miou": None}}
    assert record["status"] == "partial"  # crashed: the datasets it logged are kept
    assert record["wandb"] == {"id": "ab12cd34", "name": "mitigator.top_k=10", "group": GROUP, "state": "crashed",
                               "path": f"{PROJECT}/ab12cd34"}
    rows = load_runs(records=[record]).set_index("dataset")
    assert rows.loc["voc21", "miou"] == 61.25 and math.isnan(rows.loc["ade20k", "miou"])  # NaN: empty, not 0
    assert rows.loc["voc21", "backbone"] == "vit_b16" and rows.loc["voc21", "cfg.mitigator.top_k"] == 10


def test_the_command_line_reads_the_cache_offline(analysis_runs, tmp_path, capsys):
    pull_runs(PROJECT, GROUP, api=FakeApi(fake_runs(analysis_runs / "detector")), cache_dir=tmp_path)
    assert cli(["detector", "--wandb", PROJECT, "--group", GROUP, "--cache-dir", str(tmp_path)]) == 0
    from_cache = capsys.readouterr().out
    assert cli(["detector", "--runs", str(analysis_runs / "detector")]) == 0
    assert from_cache == capsys.readouterr().out
    assert cli(["detector", "--wandb-cache", str(cache_path(PROJECT, GROUP, tmp_path))]) == 0
    assert capsys.readouterr().out == from_cache


def test_bad_inputs_are_named(tmp_path):
    with pytest.raises(ValueError, match="ENTITY/PROJECT"):
        cache_path("just-a-project")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"runs": []}))
    with pytest.raises(ValueError, match=f"{bad} is not a W&B runs cache"):
        read_cache(bad)
    with pytest.raises(FileNotFoundError, match="pull it with --wandb"):
        read_cache(tmp_path / "absent.json")
    pull_runs(PROJECT, "empty-group", api=FakeApi([]), cache_dir=tmp_path)
    with pytest.raises(ValueError, match="no runs in W&B project sfp-lab/sfp, group empty-group"):
        load_wandb_runs(PROJECT, "empty-group", api=NoNetworkApi(), cache_dir=tmp_path)
