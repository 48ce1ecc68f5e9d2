"""W&B tracking never prompts, never blocks for long and never kills a job; every job gets
its own run. Offline runs can't be read back (binary .wandb), so these tests look at the
folders and media files W&B writes."""
import enum
import json
import sys
import time
import warnings

import numpy as np
import pytest

from sfp.errors import ConfigError
from sfp.tracking import NullTracker, Tracker, TrackingWarning, WandbTracker, has_wandb_credentials, make_tracker

wandb = pytest.importorskip("wandb")

CLOSED_PORT_URL = "http://127.0.0.1:9"  # nothing listens on the discard port: connection refused
FAKE_KEY = "a" * 40


@pytest.fixture(autouse=True)
def no_real_credentials(tmp_path, monkeypatch):
    for var in ("WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_MODE", "WANDB_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    yield
    # wandb keeps process-wide state (settings read from the env, credentials of the last
    # login); reset it so every test starts from scratch.
    wandb.teardown()


def tracker(tmp_path, mode="offline", **kwargs):
    args = dict(project="sfp-tests", entity=None, mode=mode, group="g", name="job",
                tags=["unit"], config={"mitigator": {"top_k": 10}}, dir=str(tmp_path))
    args.update(kwargs)
    return WandbTracker(**args)


def offline_runs(tmp_path):
    return sorted((tmp_path / "wandb").glob("offline-run-*"))


def voc_metrics():
    return {"miou": 50.0, "aacc": 80.0, "macc": None, "n_images": 2,
            "per_class_iou": {"background": 40.0, "cat": 60.0, "dog": None}}


def overlay(seed, h=12, w=16):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    pred = rng.integers(0, 3, size=(h, w))
    gt = rng.integers(0, 3, size=(h, w))
    gt[:2] = 255
    return image, pred, gt


def test_offline_run_writes_one_run_folder_with_tables_and_overlays(tmp_path):
    t = tracker(tmp_path)
    t.start()
    assert t.mode == "offline" and t.active
    t.log_dataset("voc21", voc_metrics(), ["background", "cat", "dog"], [overlay(0), overlay(1)])
    t.log_summary({"miou/mean": 50.0})
    t.log_table("layer_stats", ["layer", "norm"], [[9, 1.5], [10, float("nan")]])
    t.finish()

    (run,) = offline_runs(tmp_path)
    assert t.run_dir == str(run)
    assert list(run.glob("run-*.wandb"))
    media = run / "files" / "media"
    assert len(list((media / "images" / "overlays").glob("voc21_*.png"))) == 2
    assert len(list((media / "images" / "mask" / "overlays").glob("voc21_*.mask.png"))) == 4
    (table_file,) = (media / "table" / "per_class_iou").glob("voc21_*.table.json")
    table = json.loads(table_file.read_text())
    assert table["columns"] == ["class", "iou"]
    assert [row[0] for row in table["data"]] == ["background", "cat", "dog"]
    assert table["data"][1][1] == 60.0
    assert list(media.glob("table/layer_stats_*.table.json"))


def test_consecutive_trackers_log_into_separate_runs(tmp_path):
    ids = []
    for job in range(2):  # as the jobs of a Hydra multirun in one process
        with tracker(tmp_path, name=f"job{job}") as t:
            t.log_summary({"miou/mean": float(job)})
            ids.append(t.run.id)
    assert ids[0] != ids[1]
    assert len(offline_runs(tmp_path)) == 2
    assert wandb.run is None


def test_auto_mode_without_any_key_logs_offline_silently(tmp_path):
    assert not has_wandb_credentials()
    with warnings.catch_warnings():
        warnings.simplefilter("error", TrackingWarning)
        with tracker(tmp_path, mode="auto") as t:
            assert t.mode == "offline"
    assert len(offline_runs(tmp_path)) == 1


def test_auto_mode_follows_WANDB_MODE(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    with tracker(tmp_path, mode="auto") as t:
        assert t.mode == "disabled"
    assert not offline_runs(tmp_path)


def test_credentials_come_from_the_env_or_netrc(tmp_path, monkeypatch):
    assert not has_wandb_credentials("https://api.wandb.ai")
    netrc_file = tmp_path / "netrc"
    netrc_file.write_text(f"machine api.wandb.ai\n  login user\n  password {FAKE_KEY}\n")
    monkeypatch.setenv("NETRC", str(netrc_file))
    assert has_wandb_credentials("https://api.wandb.ai")
    assert not has_wandb_credentials("https://wandb.example.org")
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    assert has_wandb_credentials()


def test_disabled_mode_accepts_every_call_and_writes_nothing(tmp_path):
    t = tracker(tmp_path, mode="disabled")
    t.start()
    assert t.mode == "disabled"
    t.log_dataset("voc21", voc_metrics(), ["background", "cat", "dog"], [overlay(0)])
    t.log_summary({"miou/mean": 1.0})
    t.log_table("k", ["a"], [[1]])
    t.finish()
    assert not offline_runs(tmp_path)


def test_null_tracker_is_a_tracker_that_does_nothing(tmp_path):
    t = make_tracker("none", project="ignored")
    assert isinstance(t, NullTracker) and isinstance(t, Tracker)
    with t:
        t.log_dataset("voc21", voc_metrics(), ["a"], None)
        t.log_summary({})
        t.log_table("k", ["a"], [[1]])
    t.finish()
    assert t.run_dir is None
    assert not (tmp_path / "wandb").exists()


def test_make_tracker_accepts_config_enums_and_rejects_unknown_values(tmp_path):
    class Backend(str, enum.Enum):
        wandb = "wandb"
        none = "none"

    class Mode(str, enum.Enum):
        offline = "offline"

    t = make_tracker(Backend.wandb, project="p", entity=None, mode=Mode.offline, group=None,
                     name=None, tags=[], config={}, dir=str(tmp_path))
    assert isinstance(t, WandbTracker) and t.requested_mode == "offline"
    assert isinstance(make_tracker(Backend.none), NullTracker)
    with pytest.raises(ConfigError, match="tensorboard"):
        make_tracker("tensorboard")
    with pytest.raises(ConfigError, match="'sometimes'"):
        tracker(tmp_path, mode="sometimes")


def test_online_failure_falls_back_to_offline_quickly(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    began = time.monotonic()
    t = tracker(tmp_path, mode="online", base_url=CLOSED_PORT_URL)
    with pytest.warns(TrackingWarning, match="offline"):
        t.start()
    assert t.mode == "offline" and t.active
    t.log_summary({"miou/mean": 1.0})
    t.finish()
    assert time.monotonic() - began < 60
    assert len(offline_runs(tmp_path)) == 1


def test_online_without_a_key_goes_offline_without_prompting(tmp_path):
    t = tracker(tmp_path, mode="online")
    with pytest.warns(TrackingWarning, match="no API key"):
        t.start()
    assert t.mode == "offline"
    t.finish()
    assert len(offline_runs(tmp_path)) == 1


def test_when_init_fails_everywhere_every_call_is_a_no_op(tmp_path, monkeypatch):
    def broken_init(**kwargs):
        raise RuntimeError("W&B is down")

    monkeypatch.setattr(wandb, "init", broken_init)
    t = tracker(tmp_path, mode="offline")
    with pytest.warns(TrackingWarning, match="W&B is down"):
        t.start()
    assert t.mode == "none" and not t.active
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        t.log_dataset("voc21", voc_metrics(), ["background", "cat", "dog"], [overlay(0)])
        t.log_summary({"miou/mean": 1.0})
        t.log_table("k", ["a"], [[1]])
        t.finish()
        t.finish()


def test_missing_wandb_package_is_a_warning_not_a_crash(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb -> ImportError
    t = tracker(tmp_path)
    with pytest.warns(TrackingWarning, match="cannot import wandb"):
        t.start()
    t.log_summary({"a": 1})
    t.finish()


def test_a_logging_error_turns_later_calls_into_no_ops_but_still_finishes(tmp_path, monkeypatch):
    t = tracker(tmp_path)
    t.start()
    finished = []
    monkeypatch.setattr(t.run, "log", lambda *a, **k: (_ for _ in ()).throw(OSError("disk full")))
    real_finish = t.run.finish
    monkeypatch.setattr(t.run, "finish", lambda exit_code=0: (finished.append(exit_code), real_finish(exit_code=exit_code)))
    with pytest.warns(TrackingWarning, match="disk full"):
        t.log_table("k", ["a"], [[1]])
    with warnings.catch_warnings():
        warnings.simplefilter("error", TrackingWarning)
        t.log_table("k", ["a"], [[1]])  # no second warning: W&B is off for this job
    t.finish()
    assert finished == [0]


def test_logging_before_start_warns_once_and_logs_nothing(tmp_path):
    t = tracker(tmp_path)
    assert isinstance(t, Tracker)
    with pytest.warns(TrackingWarning, match="before start"):
        t.log_summary({"a": 1})
    with warnings.catch_warnings():
        warnings.simplefilter("error", TrackingWarning)
        t.log_summary({"a": 1})
    t.finish()
    assert not (tmp_path / "wandb").exists()


def test_finish_twice_is_safe_and_logging_after_finish_is_ignored(tmp_path):
    t = tracker(tmp_path)
    t.start()
    t.finish()
    t.finish()
    t.log_summary({"late": 1})
    assert not t.active
    assert len(offline_runs(tmp_path)) == 1


def test_exception_in_context_manager_finishes_the_run_as_failed(tmp_path, monkeypatch):
    exit_codes = []
    with pytest.raises(RuntimeError, match="boom"):
        with tracker(tmp_path) as t:
            real_finish = t.run.finish
            monkeypatch.setattr(
                t.run, "finish",
                lambda exit_code=0: (exit_codes.append(exit_code), real_finish(exit_code=exit_code)),
            )
            raise RuntimeError("boom")
    assert exit_codes == [1]
    assert not t.active and wandb.run is None
    with tracker(tmp_path) as t2:  # the next job gets a fresh run
        assert t2.active
    assert len(offline_runs(tmp_path)) == 2


def test_tags_are_cut_to_64_characters_and_config_is_plain(tmp_path):
    from pathlib import Path

    from omegaconf import OmegaConf

    t = tracker(tmp_path, tags=["x" * 100, "short", "short", ""],
                config=OmegaConf.create({"a": {"b": "${c}"}, "c": 2, "p": str(Path("/x"))}))
    assert t.tags == ["x" * 64, "short"]
    assert t.config == {"a": {"b": 2}, "c": 2, "p": "/x"}
    assert type(t.config) is dict


def test_overlays_are_capped(tmp_path):
    with tracker(tmp_path, max_overlays=3) as t:
        t.log_dataset("voc21", voc_metrics(), ["background", "cat", "dog"], [overlay(i) for i in range(5)])
    (run,) = offline_runs(tmp_path)
    assert len(list((run / "files" / "media" / "images" / "overlays").glob("*.png"))) == 3


def test_layer_statistics_are_logged_as_a_table_per_layer_values_and_a_heat_map(tmp_path):
    from sfp.methods.stats import STAT_NAMES

    stats = {"layer": [0, 1, 2], "n_crops": 4, **{name: [1.0, None, 3.0] for name in STAT_NAMES},
             "heatmap": {"grid": [2, 3], "counts": [[0, 1, 2], [3, 0, 0]], "n_crops": 4}}
    t = tracker(tmp_path)
    t.start()
    with warnings.catch_warnings():
        warnings.simplefilter("error", TrackingWarning)  # nothing may be swallowed
        t.log_layer_stats("voc21", stats)
    t.finish()
    (run,) = offline_runs(tmp_path)
    media = run / "files" / "media"
    (table_file,) = (media / "table" / "outlier_stats").glob("voc21_*.table.json")
    table = json.loads(table_file.read_text())
    assert table["columns"] == ["layer", *STAT_NAMES] and len(table["data"]) == 3
    (heatmap,) = (media / "images" / "outlier_stats" / "voc21").glob("heatmap_*.png")
    from PIL import Image

    assert Image.open(heatmap).size == (3 * 16, 2 * 16)


def test_sync_selects_the_offline_runs_of_complete_jobs_only(tmp_path, capsys):
    from sfp.tracking.results_store import write_json_atomic
    from sfp.tracking.sync import main as sync

    for job, status in (("0", "complete"), ("1", "partial"), ("2", None)):
        (tmp_path / job / "wandb" / f"offline-run-2026-{job}").mkdir(parents=True)
        if status:
            write_json_atomic(tmp_path / job / "results.json", {"config": {}, "choices": {}, "metrics": {},
                                                                 "status": status})
    assert sync([str(tmp_path), "--dry-run"]) == 0
    out = capsys.readouterr()
    assert out.out.split() == [str(tmp_path / "0" / "wandb" / "offline-run-2026-0")]
    assert "left out" in out.err and "partial" in out.err and "no results.json" in out.err
