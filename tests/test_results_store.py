"""The local results store: atomic JSON records (NaN as null) and the collected table."""
import enum
import json
import math
import os
import platform
import stat
from pathlib import Path

import numpy as np
import pytest
import torch

from sfp.errors import SFPError
from sfp.tracking import results_store
from sfp.tracking.results_store import (
    BASE_COLUMNS,
    ResultsError,
    build_record,
    collect_results,
    collect_versions,
    read_results,
    to_jsonable,
    write_json_atomic,
    write_results,
)


class Colour(enum.Enum):
    red = "red"


# --------------------------------------------------------------------------- atomic writes


def test_atomic_write_leaves_only_the_target_and_replaces_it_whole(tmp_path):
    target = tmp_path / "results.json"
    write_json_atomic(target, {"long": "x" * 10_000})
    write_json_atomic(target, {"short": 1})
    assert json.loads(target.read_text()) == {"short": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]


def test_atomic_write_creates_missing_folders_and_a_readable_file(tmp_path):
    target = tmp_path / "a" / "b" / "results.json"
    write_json_atomic(target, {"x": 1})
    assert stat.S_IMODE(target.stat().st_mode) == 0o644


@pytest.mark.parametrize("fail_at", ["json.dump", "os.replace"])
def test_crash_mid_write_keeps_the_old_file_intact(tmp_path, monkeypatch, fail_at):
    target = tmp_path / "results.json"
    write_json_atomic(target, {"version": "old"})
    old_bytes = target.read_bytes()

    def partial_dump(obj, f, **kwargs):
        f.write('{"version": "ne')  # half a record, then the process "dies"
        raise OSError("disk full")

    def failing_replace(src, dst):
        raise OSError("killed before rename")

    if fail_at == "json.dump":
        monkeypatch.setattr(results_store.json, "dump", partial_dump)
    else:
        monkeypatch.setattr(results_store.os, "replace", failing_replace)
    with pytest.raises(OSError):
        write_json_atomic(target, {"version": "new"})
    assert target.read_bytes() == old_bytes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]


def test_unserialisable_value_fails_before_touching_the_disk(tmp_path):
    target = tmp_path / "results.json"
    write_json_atomic(target, {"ok": 1})
    with pytest.raises(TypeError, match=r"\$\.metrics\.bad"):
        write_json_atomic(target, {"metrics": {"bad": object()}})
    assert json.loads(target.read_text()) == {"ok": 1}
    assert len(list(tmp_path.iterdir())) == 1


# --------------------------------------------------------------------------- sanitising


def test_nan_and_non_json_types_round_trip(tmp_path):
    record = {
        "nan": float("nan"),
        "inf": [float("inf"), -float("inf"), 1.5],
        "np": {"f32": np.float32(0.5), "i64": np.int64(3), "nan": np.float64("nan")},
        "arr": np.array([1, 2]),
        "torch": {"scalar": torch.tensor(2.5), "int": torch.tensor(7)},
        "enum": Colour.red,
        "path": Path("/data/voc"),
        "tuple": (1, 2),
        "keys": {Colour.red: 1, 3: "three"},
    }
    target = tmp_path / "r.json"
    write_json_atomic(target, record)
    text = target.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {
        "nan": None,
        "inf": [None, None, 1.5],
        "np": {"f32": 0.5, "i64": 3, "nan": None},
        "arr": [1, 2],
        "torch": {"scalar": 2.5, "int": 7},
        "enum": "red",
        "path": "/data/voc",
        "tuple": [1, 2],
        "keys": {"red": 1, "3": "three"},
    }


def test_to_jsonable_converts_omegaconf_and_keeps_bools():
    from omegaconf import OmegaConf

    cfg = OmegaConf.create({"a": 1, "b": "${a}", "flag": True})
    assert to_jsonable(cfg) == {"a": 1, "b": 1, "flag": True}
    assert to_jsonable(np.bool_(True)) is True


# --------------------------------------------------------------------------- reading records


def test_read_results_names_the_file_when_not_json(tmp_path):
    bad = tmp_path / "results.json"
    bad.write_text("{not json")
    with pytest.raises(ResultsError, match=str(bad)) as info:
        read_results(bad)
    assert isinstance(info.value, SFPError)


def test_read_results_names_the_missing_keys(tmp_path):
    bad = tmp_path / "results.json"
    bad.write_text(json.dumps({"config": {}, "metrics": {}}))
    with pytest.raises(ResultsError, match="choices, status"):
        read_results(bad)
    bad.write_text("[1, 2]")
    with pytest.raises(ResultsError, match="list"):
        read_results(bad)


# --------------------------------------------------------------------------- building records


def test_build_record_has_the_documented_layout():
    metrics = {"voc21": {"miou": 50.0, "aacc": 80.0, "macc": 60.0, "per_class_iou": {"cat": None}, "n_images": 3}}
    rec = build_record(
        config={"mitigator": {"top_k": 10}},
        choices={"backbone": "vit_b16", "mitigator": "on"},
        metrics=metrics,
        timing={"total_s": 1.0},
        class_files={"voc21": "ab" * 32},
        extra={"note": "x"},
    )
    assert list(rec) == [
        "config", "choices", "metrics", "timing", "versions", "class_files", "status", "note",
    ]
    assert rec["status"] == "complete"
    assert rec["metrics"] == metrics
    for key in ("python", "torch", "open_clip", "hydra", "omegaconf", "wandb", "numpy", "pandas", "code_version"):
        assert key in rec["versions"]
    assert rec["versions"]["python"] == platform.python_version()
    assert isinstance(rec["versions"]["torch"], str)
    with pytest.raises(ValueError, match="status"):
        build_record({}, {}, {}, {}, {}, extra={"status": "x"})


def test_versions_of_missing_packages_are_none(monkeypatch):
    monkeypatch.setitem(results_store._VERSION_PACKAGES, "nothing", "no-such-distribution-sfp")
    results_store._process_versions.cache_clear()  # read once per process otherwise
    versions = collect_versions()
    results_store._process_versions.cache_clear()
    assert versions["nothing"] is None
    assert versions["numpy"] == np.__version__


def test_code_version_does_not_crash_without_git(monkeypatch):
    monkeypatch.setenv("PATH", "")  # no git executable
    assert results_store._git(Path.cwd(), "describe") is None
    version = results_store.code_version()
    assert version is None or isinstance(version, str)


def test_code_version_inside_a_git_checkout_is_git_describe():
    described = results_store._git(Path(results_store.__file__).parent, "describe", "--always", "--dirty")
    if described is None:
        pytest.skip("the sfp package is not in a git checkout here")
    assert results_store.code_version() == described


# --------------------------------------------------------------------------- collecting


def make_record(choices, config, metrics, code="v1"):
    return {
        "config": config,
        "choices": choices,
        "metrics": metrics,
        "timing": {},
        "versions": {"code_version": code},
        "class_files": {},
        "status": "complete",
    }


def ds(miou, n=10):
    return {"miou": miou, "aacc": 90.0, "macc": 70.0, "per_class_iou": {"bg": miou, "cat": None}, "n_images": n}


@pytest.fixture
def sweep(tmp_path):
    root = tmp_path / "sweep"
    write_results(
        root / "0",
        make_record(
            {"mitigator": "on", "backbone": "vit_b16", "hydra/launcher": "basic"},  # hydra/*: no column
            {"mitigator": {"top_k": 10, "layers": [9, 10]}, "seed": 0},
            {"voc21": ds(60.0), "ade20k": ds(float("nan"), 5)},
        ),
    )
    write_results(
        root / "1",
        make_record(
            {"mitigator": "off", "backbone": "vit_b16"},
            {"mitigator": {"top_k": 5, "layers": []}, "seed": 0},
            {"voc21": ds(55.0), "ade20k": ds(20.0, 5)},
        ),
    )
    # deeper in the tree, without a `seed` in its config and without a backbone choice
    write_results(
        root / "nested" / "2",
        make_record(
            {"mitigator": "on"},
            {"mitigator": {"top_k": 20, "layers": [{"a": 1}]}},
            {"voc21": ds(61.5), "context59": ds(30.0, 7)},
            code="v2-dirty",
        ),
    )
    return root


def test_collect_results_gives_one_row_per_file_and_dataset(sweep):
    df = collect_results(sweep)
    assert list(df.columns) == list(BASE_COLUMNS) + [
        "choice.backbone", "choice.mitigator", "cfg.mitigator.layers", "cfg.mitigator.top_k", "cfg.seed",
    ]
    assert len(df) == 6
    df = df.sort_values(["run_dir", "dataset"]).reset_index(drop=True)
    assert df["run_dir"].tolist() == [str(sweep / d) for d in ("0", "0", "1", "1", "nested/2", "nested/2")]
    assert df["dataset"].tolist() == ["ade20k", "voc21", "ade20k", "voc21", "context59", "voc21"]
    assert df["miou"].tolist()[1:] == [60.0, 20.0, 55.0, 30.0, 61.5]
    assert math.isnan(df["miou"][0])  # stored as null, read back as NaN, never 0
    assert df["aacc"].tolist() == [90.0] * 6
    assert df["n_images"].tolist() == [5, 10, 5, 10, 7, 10]
    assert df["n_images"].dtype == "int64"
    assert df["choice.mitigator"].tolist() == ["on", "on", "off", "off", "on", "on"]
    assert df["choice.backbone"].tolist()[:4] == ["vit_b16"] * 4
    assert df["choice.backbone"][4:].isna().all()
    assert df["cfg.mitigator.top_k"].tolist() == [10, 10, 5, 5, 20, 20]
    assert df["cfg.mitigator.layers"].tolist()[:4] == [(9, 10), (9, 10), (), ()]
    assert df["cfg.mitigator.layers"][4] == '[{"a": 1}]'
    assert df["cfg.seed"][:4].tolist() == [0, 0, 0, 0] and df["cfg.seed"][4:].isna().all()
    assert df["code_version"].tolist() == ["v1"] * 4 + ["v2-dirty"] * 2
    assert df["status"].eq("complete").all()
    # every value is hashable, so ablation tables can group by any column
    assert df.groupby(["choice.mitigator", "cfg.mitigator.layers", "dataset"])["miou"].mean().size == 6


def test_collect_results_can_add_per_class_columns(sweep):
    df = collect_results(sweep, per_class=True)
    assert {"iou.bg", "iou.cat"} <= set(df.columns)
    assert df["iou.cat"].isna().all()


def test_bad_files_are_skipped_with_a_warning_naming_them(sweep):
    broken = sweep / "3" / "results.json"
    broken.parent.mkdir()
    broken.write_text('{"config": {}, "metr')
    not_a_record = sweep / "4" / "results.json"
    not_a_record.parent.mkdir()
    not_a_record.write_text('{"hello": 1}')
    with pytest.warns(UserWarning) as caught:
        df = collect_results(sweep)
    messages = " ".join(str(w.message) for w in caught)
    assert str(broken) in messages and str(not_a_record) in messages
    assert len(df) == 6


def test_a_record_without_datasets_still_shows_up(tmp_path):
    rec = make_record({"mitigator": "on"}, {}, {})
    rec["status"] = "failed"
    write_results(tmp_path / "run", rec)
    df = collect_results(tmp_path)
    assert len(df) == 1
    assert df["status"][0] == "failed" and df["dataset"].isna().all() and df["miou"].isna().all()


def test_empty_folder_gives_empty_frame_with_base_columns(tmp_path):
    df = collect_results(tmp_path)
    assert list(df.columns) == list(BASE_COLUMNS)
    assert len(df) == 0
    assert df["miou"].dtype == "float64"


def test_missing_folder_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        collect_results(tmp_path / "nope")


def test_write_results_refuses_an_incomplete_record(tmp_path):
    with pytest.raises(ValueError, match="metrics"):
        write_results(tmp_path, {"config": {}, "choices": {}, "status": "complete"})
    assert not os.listdir(tmp_path)
