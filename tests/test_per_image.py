"""Per-image records: every job stores each image's per-class counts, and they sum to the job's totals exactly."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import sfp
from sfp.data import build_dataset
from sfp.metrics import IoUAccumulator
from sfp.runner import run_jobs, run_job
from sfp.tracking.per_image import (
    AREA_NAMES, PerImageAreas, PerImageError, load_for_record, read_per_image, write_per_image,
)
from sfp.tracking.results_store import ResultsError, read_results, write_json_atomic
from tests.data_layouts_fixture import build_layout
from tests.helpers import tiny_overrides


def _job(tmp_path, *overrides, datasets="[voc21,ade20k]"):
    build_layout("voc21", tmp_path / "data", n=4)
    build_layout("ade20k", tmp_path / "data", n=3)
    keys = datasets.strip("[]").split(",")
    return sfp.compose(tiny_overrides(tmp_path, datasets) + [f"datasets.{k}.short_side=40" for k in keys]
                       + list(overrides))


def test_per_image_counts_sum_exactly_to_the_job_totals_and_match_each_saved_prediction(tmp_path):
    cfg = _job(tmp_path, "save_predictions=true")
    record = run_job(cfg, tmp_path / "job")
    for key in ("voc21", "ade20k"):
        entry = record["per_image"][key]
        assert entry["file"] == f"per_image/{key}.npz" and (tmp_path / "job" / entry["file"]).is_file()
        table = load_for_record(tmp_path / "job", record, key)
        dataset = build_dataset(cfg.datasets[key], key=key)
        assert table.names == [sample.name for sample in dataset]  # dataset order, keyed by image name
        assert entry["n_images"] == record["metrics"][key]["n_images"] == table.num_images
        assert table.total().tolist() == [record["areas"][key][name] for name in AREA_NAMES]
        assert table.pixels.sum() == record["metrics"][key]["n_pixels"]
        for i, sample in enumerate(dataset):  # each row is that image's own counts
            prediction = np.array(Image.open(tmp_path / "job" / "predictions" / key / f"{sample.name}.png"))
            alone = IoUAccumulator(dataset.num_classes)
            alone.update(prediction.astype(np.int64), sample.label)
            assert np.array_equal(table.areas[i], alone.state_tensor().numpy())
            assert table.pixels[i] == int((sample.label != 255).sum())
    assert not list((tmp_path / "job" / "per_image").glob("*.tmp"))  # written atomically: nothing left over


def test_each_job_of_a_shared_pass_gets_the_per_image_counts_of_a_separate_run(tmp_path):
    configs = [_job(tmp_path, f"mitigator={m}", datasets="[voc21]") for m in ("on", "off")]
    grouped = run_jobs(configs, [tmp_path / "g0", tmp_path / "g1"])
    separate = run_jobs(configs, [tmp_path / "s0", tmp_path / "s1"], grouped=False)
    assert grouped[0].record["evaluation"]["jobs_in_pass"] == 2
    for g, s in zip(grouped, separate):
        together = load_for_record(g.output_dir, g.record, "voc21")
        alone = load_for_record(s.output_dir, s.record, "voc21")
        assert together.names == alone.names and np.array_equal(together.areas, alone.areas)


def test_resume_counts_a_job_as_done_only_when_its_per_image_files_are_there_and_intact(tmp_path):
    cfg = _job(tmp_path, "resume=true", datasets="[voc21]")
    run_jobs([cfg], [tmp_path / "job"])
    path = tmp_path / "job" / "per_image" / "voc21.npz"
    assert run_jobs([cfg], [tmp_path / "job"])[0].resumed
    path.unlink()  # e.g. a crash between the record and the file, or a file copied away
    result = run_jobs([cfg], [tmp_path / "job"])[0]
    assert not result.resumed and path.is_file()
    path.write_bytes(path.read_bytes()[:-10])  # truncated
    assert not run_jobs([cfg], [tmp_path / "job"])[0].resumed
    record = read_results(tmp_path / "job" / "results.json")
    del record["per_image"]  # a record from before per-image records
    write_json_atomic(tmp_path / "job" / "results.json", record)
    assert not run_jobs([cfg], [tmp_path / "job"])[0].resumed
    assert run_jobs([cfg], [tmp_path / "job"])[0].resumed


def test_the_file_round_trips_sparse_counts_and_refuses_what_does_not_match_its_record(tmp_path):
    rng = np.random.default_rng(0)
    labelled = rng.integers(0, 5, (6, 4)) * (rng.random((6, 4)) < 0.5)
    predicted = rng.integers(0, 5, (6, 4))
    intersection = np.minimum(labelled, predicted)
    areas = np.stack([intersection, labelled + predicted - intersection, predicted, labelled], axis=1)
    table = PerImageAreas([f"img{i}" for i in range(6)], areas, labelled.sum(axis=1), ["a", "b", "c", "d"])
    write_per_image(tmp_path / "t.npz", table)
    back = read_per_image(tmp_path / "t.npz")
    assert back.names == table.names and np.array_equal(back.areas, table.areas) and back.class_names == list("abcd")
    assert back.select(["img3", "img0"]).names == ["img3", "img0"]

    with pytest.raises(PerImageError, match="img1"):
        PerImageAreas(["img0", "img1", "img1"], areas[:3], labelled[:3].sum(axis=1), list("abcd"))
    record = {"metrics": {"d": {}}, "areas": {"d": dict(zip(AREA_NAMES, table.total().tolist()))},
              "per_image": {"d": {"file": "t.npz", "sha256": "0" * 64}}}
    with pytest.raises(PerImageError, match="sha256"):
        load_for_record(tmp_path, record, "d")
    from sfp.tracking.per_image import file_sha256

    record["per_image"]["d"]["sha256"] = file_sha256(tmp_path / "t.npz")
    assert load_for_record(tmp_path, record, "d").num_images == 6
    record["areas"]["d"]["union"][0] += 1  # a file of another job
    with pytest.raises(PerImageError, match="sums differ"):
        load_for_record(tmp_path, record, "d")
    with pytest.raises(PerImageError, match="no per-image counts"):
        load_for_record(tmp_path, {"per_image": {}}, "d")


def test_a_per_image_file_that_cannot_be_written_stops_the_job_with_an_error_naming_it(tmp_path):
    cfg = _job(tmp_path, datasets="[voc21]")
    (tmp_path / "job").mkdir()
    (tmp_path / "job" / "per_image").write_text("a file where the folder should be")
    with pytest.raises(ResultsError, match="could not write the per-image file of 'voc21'"):
        run_job(cfg, tmp_path / "job")
