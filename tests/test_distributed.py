"""Data-parallel evaluation: two gloo processes on the CPU give exactly the single-process result."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from tests.helpers import REPO
from sfp.engine.distributed import Ranks, shard
from sfp.tracking.per_image import AREA_NAMES, load_for_record
from sfp.tracking.results_store import read_results


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _one_and_two_processes(arguments, folder_key: str, tmp_path) -> subprocess.CompletedProcess:
    """main.py with `arguments` in one process (into tmp_path/one) and under torchrun with two (tmp_path/two)."""
    single = subprocess.run([sys.executable, "main.py", *arguments, f"{folder_key}={tmp_path / 'one'}"],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-2000:]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={_free_port()}"]
    double = subprocess.run([*torchrun, "main.py", *arguments, f"{folder_key}={tmp_path / 'two'}"],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert double.returncode == 0, double.stderr[-3000:]
    return double


def test_shards_cover_every_image_exactly_once():
    for length in (0, 1, 5, 8):
        for world in (1, 2, 3):
            indices = sorted(i for rank in range(world) for i in shard(length, Ranks(rank, world)))
            assert indices == list(range(length))


def test_two_processes_reduce_sums_to_the_single_process_metrics(tiny_voc, tmp_path):
    _, overrides = tiny_voc
    double = _one_and_two_processes(overrides, "hydra.run.dir", tmp_path)
    assert double.stdout.count("results: ") == 1  # only rank 0, which writes the record, prints its path
    one, two = read_results(tmp_path / "one" / "results.json"), read_results(tmp_path / "two" / "results.json")
    assert two["world_size"] == 2 and two["metrics"]["voc21"]["n_images"] == 3
    assert two["metrics"] == one["metrics"]  # integer sums: exactly equal, no image counted twice
    for name in ("candidates", "cls_entropy", "norm_ratio"):
        assert two["outlier_stats"]["voc21"][name] == pytest.approx(one["outlier_stats"]["voc21"][name], rel=1e-6)
    assert two["outlier_stats"]["voc21"]["n_crops"] == one["outlier_stats"]["voc21"]["n_crops"]
    # the per-image counts are gathered from both ranks, in dataset order, and sum to the job's areas
    per_one = load_for_record(tmp_path / "one", one, "voc21")
    per_two = load_for_record(tmp_path / "two", two, "voc21")
    assert per_two.names == per_one.names and len(per_two.names) == 3
    assert np.array_equal(per_two.areas, per_one.areas) and np.array_equal(per_two.pixels, per_one.pixels)
    assert per_two.total().tolist() == [two["areas"]["voc21"][name] for name in AREA_NAMES]


def test_a_sweep_shared_pass_under_two_processes_gives_each_jobs_single_process_record(tiny_voc, tmp_path):
    _, overrides = tiny_voc
    double = _one_and_two_processes(["-m", "mitigator=on,off", "method=sfp,clip", *overrides], "hydra.sweep.dir",
                                    tmp_path)
    assert double.stdout.count("results: ") == 4  # rank 0 prints each job's table once
    for job in range(4):
        one = read_results(tmp_path / "one" / str(job) / "results.json")
        two = read_results(tmp_path / "two" / str(job) / "results.json")
        assert one["evaluation"]["jobs_in_pass"] == two["evaluation"]["jobs_in_pass"] == 4
        assert two["world_size"] == 2 and two["areas"] == one["areas"] and two["metrics"] == one["metrics"]
        assert np.array_equal(load_for_record(tmp_path / "two" / str(job), two, "voc21").areas,
                              load_for_record(tmp_path / "one" / str(job), one, "voc21").areas)
