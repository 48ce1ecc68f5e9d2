"""The speed benchmark script (`python -m sfp.bench`): it runs end to end and reports every figure in its
last line. Only the report's shape and consistency are specified here; timings are never asserted."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

import sfp
from sfp.bench import main, write_voc_files
from sfp.config import catalog
from sfp.data import build_dataset

from tests.helpers import REPO

FIGURES = {"pipeline_images_per_s", "bare_forward_images_per_s", "crops_per_image", "batch1_images_per_s",
           "efficiency", "speedup", "same_metrics_as_batch1", "peak_memory_mb", "cost_vs_clip"}


def test_benchmark_files_are_read_by_the_voc_loader_at_voc_size(tmp_path):
    write_voc_files(tmp_path, 3)
    cfg = sfp.compose(["datasets=[voc21]", f"paths.data_root={tmp_path}"])
    dataset = build_dataset(cfg.datasets["voc21"], "voc21")
    sample = dataset[2]
    assert len(dataset) == 3 and sample.image.shape == (375, 500, 3) and sample.label.shape == (375, 500)
    assert set(np.unique(sample.label)) <= set(range(21))


def test_benchmark_reports_every_figure_per_variant_and_backbone_in_its_last_line(capsys):
    torch.set_num_threads(1)
    assert main(["--backbones", "tiny", "--images", "2", "--repeats", "1", "--variants", "clip", "sfp"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(report) == {"cpu", "studies", "settings"} and set(report["cpu"]) == {"clip", "sfp"}
    assert report["studies"] == {}
    assert report["settings"]["images"] == 2 and report["settings"]["workers"] == 0
    for variant in ("clip", "sfp"):
        figures = report["cpu"][variant]["tiny"]
        assert set(figures) == FIGURES
        assert figures["crops_per_image"] == 6  # 500x375 -> 448x336 at short side 336: 2 x 3 windows of 224
        assert figures["same_metrics_as_batch1"] is True  # batching windows changes no prediction
        assert figures["efficiency"] == pytest.approx(
            figures["pipeline_images_per_s"] / figures["bare_forward_images_per_s"])
        assert figures["speedup"] == pytest.approx(
            figures["pipeline_images_per_s"] / figures["batch1_images_per_s"])
    assert report["cpu"]["clip"]["tiny"]["cost_vs_clip"] == 1.0


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given without a GPU")
def test_benchmark_on_cuda_without_a_gpu_fails_with_one_clear_line():
    result = subprocess.run([sys.executable, "-m", "sfp.bench", "--device", "cuda", "--backbones", "tiny",
                             "--images", "1", "--repeats", "1"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 2
    assert "no CUDA GPU is available" in result.stderr and "Traceback" not in result.stderr


def test_a_study_times_an_experiments_grid_in_shared_passes_and_one_job_at_a_time(capsys):
    torch.set_num_threads(1)
    assert main(["--study", "ablation_components", "main_table", "--backbones", "tiny", "--images", "1",
                 "--repeats", "1"]) == 0
    output = capsys.readouterr().out.strip().splitlines()
    report = json.loads(output[-1])
    assert report["cpu"] == {}  # no --variants with --study: only the studies are timed
    components, presets = report["studies"]["ablation_components"]["tiny"], report["studies"]["main_table"]["tiny"]
    assert components["variants"] == 8 and components["groups"] == 1
    assert presets["variants"] == len(catalog.presets()) and presets["groups"] == 1  # one backbone
    for figures in (components, presets):
        assert set(figures) == {"variants", "groups", "separate_s", "grouped_s", "speedup", "identical"}
        assert figures["identical"] is True
        assert figures["speedup"] == pytest.approx(figures["separate_s"] / figures["grouped_s"])
    assert any(line.startswith("study ablation_components on tiny: 8 jobs in 1 passes") for line in output)


def test_an_unknown_study_is_refused_naming_the_known_experiments():
    result = subprocess.run([sys.executable, "-m", "sfp.bench", "--study", "nope", "--backbones", "tiny"],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 2
    assert "--study nope" in result.stderr and "ablation_components" in result.stderr
