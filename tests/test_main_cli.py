"""`python main.py` as users type it: a multirun sweep and the error messages for bad input."""
from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest

from tests.helpers import REPO, tiny_overrides

from sfp.tracking.results_store import collect_results, read_results
from tests.wandb_records import read_offline_run


def run_main(*args, timeout=600):
    return subprocess.run([sys.executable, "main.py", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)


def test_a_multirun_over_two_switches_gives_four_jobs_four_records_and_four_wandb_runs_in_one_group(tiny_voc, tmp_path):
    _, overrides = tiny_voc
    overrides = [o for o in overrides if o != "tracker=none"] + ["tracker=wandb", "tracker.mode=offline"]
    sweep = tmp_path / "sweep-7f3a"
    result = run_main("-m", "mitigator=on,off", "enhancer=on,off", *overrides, f"hydra.sweep.dir={sweep}")
    assert result.returncode == 0, result.stderr[-3000:]

    records = [read_results(path) for path in sorted(sweep.glob("*/results.json"))]
    assert len(records) == 4
    choices = {(r["choices"]["mitigator"], r["choices"]["enhancer"]) for r in records}
    assert choices == {("on", "on"), ("on", "off"), ("off", "on"), ("off", "off")}
    assert all(r["status"] == "complete" and r["metrics"]["voc21"]["n_images"] == 3 for r in records)

    runs = sorted(sweep.glob("*/wandb/offline-run-*"))
    assert len(runs) == 4
    for run_dir in runs:  # what was logged, read back from the offline record log
        run = read_offline_run(run_dir)
        record = read_results(run_dir.parent.parent / "results.json")
        assert run.group == "sweep-7f3a" and run.exit_code == 0
        assert (run.config["mitigator_choice"], run.config["enhancer_choice"]) == (
            record["choices"]["mitigator"], record["choices"]["enhancer"])
        assert run.config["mitigator"]["enabled"] == record["config"]["mitigator"]["enabled"]
        assert run.summary["miou/voc21"] == pytest.approx(record["metrics"]["voc21"]["miou"])
        assert run.summary["n_images/voc21"] == 3
        assert run.summary["per_class_iou/voc21._type"] == "table-file"
        assert run.summary["per_class_iou/voc21.nrows"] == 21
        assert run.summary["outlier_stats/voc21._type"] == "table-file"
        assert run.summary["outlier_stats/voc21/heatmap._type"] == "image-file"
        assert run.summary["overlays/voc21.count"] == 3

    table = collect_results(sweep)
    assert len(table) == 4 and set(table["dataset"]) == {"voc21"}
    assert table.groupby(["choice.mitigator", "choice.enhancer"]).size().tolist() == [1, 1, 1, 1]
    assert not pd.isna(table["miou"]).any()


def test_a_missing_data_root_fails_naming_the_expected_path(tmp_path):
    result = run_main(*tiny_overrides(tmp_path), f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode != 0
    assert str(tmp_path / "data" / "VOCdevkit" / "VOC2012") in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_an_unknown_key_fails_naming_it(tmp_path):
    result = run_main("inference.strid=5", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode != 0 and "inference.strid" in result.stderr


def test_an_out_of_range_value_fails_naming_the_key_and_range(tmp_path):
    result = run_main(*tiny_overrides(tmp_path), "datasets.voc21.prob_thd=3", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "datasets.voc21.prob_thd=3" in output and "[0, 1]" in output


def test_resume_reruns_only_the_jobs_without_a_complete_record(tiny_voc, tmp_path):
    _, overrides = tiny_voc
    sweep = tmp_path / "sweep"
    args = ["-m", "method=clip,maskclip,sfp", *overrides, f"hydra.sweep.dir={sweep}"]
    assert run_main(*args).returncode == 0
    first = {p.parent.name: (p.stat().st_mtime_ns, read_results(p)) for p in sweep.glob("*/results.json")}
    assert len(first) == 3
    (sweep / "0" / "results.json").unlink()  # killed before it finished
    partial = read_results(sweep / "1" / "results.json")
    partial["status"] = "partial"  # killed between two datasets
    from sfp.tracking.results_store import write_json_atomic

    write_json_atomic(sweep / "1" / "results.json", partial)
    stamp_of_partial = (sweep / "1" / "results.json").stat().st_mtime_ns

    result = run_main(*args, "resume=true")
    assert result.returncode == 0, result.stderr[-2000:]
    assert (result.stdout + result.stderr).count("skipping the job") == 1
    after = {p.parent.name: p for p in sweep.glob("*/results.json")}
    assert sorted(after) == ["0", "1", "2"]
    assert all(read_results(p)["status"] == "complete" for p in after.values())
    assert after["2"].stat().st_mtime_ns == first["2"][0]  # the finished job was not run again
    assert after["1"].stat().st_mtime_ns != stamp_of_partial
    for job in ("0", "1"):  # rerun jobs give the same numbers
        assert read_results(after[job])["metrics"] == first[job][1]["metrics"]
