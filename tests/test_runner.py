"""One job end to end on the tiny model: the results record, predictions, determinism, W&B failure."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

import sfp
from sfp.metrics import IoUAccumulator
from sfp.runner import run_job


def test_a_job_writes_a_complete_record_with_metrics_config_versions_and_class_file_hashes(tiny_voc, tmp_path):
    entries, overrides = tiny_voc
    cfg = sfp.compose(overrides)
    record = run_job(cfg, tmp_path / "job", choices={"backbone": "tiny", "mitigator": "on"})
    on_disk = json.loads((tmp_path / "job" / "results.json").read_text())
    assert on_disk["status"] == "complete"
    assert on_disk["choices"] == {"backbone": "tiny", "mitigator": "on"}
    assert on_disk["config"]["backbone"]["model"] == "sfp-tiny-12"
    assert on_disk["config"]["inference"]["precision"] == "float32"  # resolved, enums as strings
    voc = on_disk["metrics"]["voc21"]
    assert voc["n_images"] == 3 and set(voc) >= {"miou", "aacc", "macc", "per_class_iou"}
    assert list(voc["per_class_iou"])[:2] == ["background", "aeroplane"] and len(voc["per_class_iou"]) == 21
    assert len(on_disk["class_files"]["voc21"]) == 64
    assert on_disk["versions"]["torch"] and "code" in json.dumps(on_disk["versions"])
    assert on_disk["protocol"]["voc21"]["prob_thd"] == 0.15
    assert on_disk["model"]["is_real_clip"] is False
    assert record["metrics"]["voc21"]["miou"] == voc["miou"]


def test_the_same_config_twice_gives_identical_miou(tiny_voc, tmp_path):
    _, overrides = tiny_voc
    first = run_job(sfp.compose(overrides), tmp_path / "a")
    second = run_job(sfp.compose(overrides), tmp_path / "b")
    assert first["metrics"]["voc21"]["miou"] == second["metrics"]["voc21"]["miou"]
    np.testing.assert_equal(first["metrics"]["voc21"]["per_class_iou"], second["metrics"]["voc21"]["per_class_iou"])


def test_saved_predictions_are_class_index_pngs_at_ground_truth_size_that_reproduce_the_metric(tiny_voc, tmp_path):
    entries, overrides = tiny_voc
    record = run_job(sfp.compose(overrides + ["save_predictions=true"]), tmp_path / "job")
    accumulator = IoUAccumulator(21)
    for entry in entries:
        png = tmp_path / "job" / "predictions" / "voc21" / f"{entry.name}.png"
        prediction = np.array(Image.open(png))
        assert prediction.shape == entry.raw_label.shape
        assert prediction.max() < 21  # 255 is never predicted
        accumulator.update(prediction.astype(np.int64), entry.raw_label.astype(np.int64))
    assert accumulator.compute().miou == pytest.approx(record["metrics"]["voc21"]["miou"], abs=1e-9)


def test_batch_sizes_do_not_change_the_result(tiny_voc, tmp_path):
    _, overrides = tiny_voc
    one = run_job(sfp.compose(overrides + ["inference.batch_size=1", "inference.images_per_batch=1"]), tmp_path / "1")
    many = run_job(sfp.compose(overrides + ["inference.batch_size=32", "inference.images_per_batch=3"]), tmp_path / "n")
    assert one["metrics"]["voc21"]["miou"] == pytest.approx(many["metrics"]["voc21"]["miou"], abs=1e-6)


def test_decoding_in_worker_processes_gives_the_same_metrics_as_in_the_main_process(tiny_voc, tmp_path):
    _, overrides = tiny_voc
    inline = run_job(sfp.compose(overrides + ["inference.images_per_batch=2"]), tmp_path / "0")
    workers = run_job(sfp.compose(overrides + ["inference.images_per_batch=2", "inference.num_workers=2"]),
                      tmp_path / "2")
    # same images, same order, none twice (assert_equal: absent classes are NaN on both sides)
    np.testing.assert_equal(workers["metrics"]["voc21"], inline["metrics"]["voc21"])
    assert workers["config"]["inference"]["num_workers"] == 2


def test_when_wandb_cannot_reach_its_server_the_job_logs_offline_and_still_writes_results(
        tiny_voc, tmp_path, monkeypatch, request):
    import wandb

    request.addfinalizer(wandb.teardown)  # a login attempt leaves process-wide settings behind
    _, overrides = tiny_voc
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # a closed local port: no server
    overrides = [o for o in overrides if o != "tracker=none"] + ["tracker=wandb", "tracker.mode=online"]
    with pytest.warns(UserWarning, match="(?i)offline"):
        record = run_job(sfp.compose(overrides), tmp_path / "job")
    assert (tmp_path / "job" / "results.json").is_file() and record["status"] == "complete"
    assert list((tmp_path / "job").rglob("offline-run-*"))


def test_the_printed_table_shows_each_dataset_and_says_plainly_when_the_model_is_not_a_real_clip(tiny_voc, tmp_path):
    from sfp.runner import format_table

    _, overrides = tiny_voc
    record = run_job(sfp.compose(overrides), tmp_path / "job")
    table = format_table(record)
    assert "voc21" in table and f"{record['metrics']['voc21']['miou']:.2f}" in table
    assert "NOT a real CLIP" in table
    record["model"]["is_real_clip"] = True
    assert "NOT a real CLIP" not in format_table(record)
