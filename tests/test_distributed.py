"""Data-parallel evaluation: two gloo processes on the CPU give exactly the single-process result."""
from __future__ import annotations

import subprocess
import sys

import pytest

from tests.helpers import REPO
from sfp.engine.distributed import Ranks, shard
from sfp.tracking.results_store import read_results


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_shards_cover_every_image_exactly_once():
    for length in (0, 1, 5, 8):
        for world in (1, 2, 3):
            indices = sorted(i for rank in range(world) for i in shard(length, Ranks(rank, world)))
            assert indices == list(range(length))


def test_two_processes_reduce_sums_to_the_single_process_metrics(tiny_voc, tmp_path):
    _, overrides = tiny_voc
    single = subprocess.run([sys.executable, "main.py", *overrides, f"hydra.run.dir={tmp_path / 'one'}"],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-2000:]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={_free_port()}"]
    double = subprocess.run([*torchrun, "main.py", *overrides, f"hydra.run.dir={tmp_path / 'two'}"],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert double.returncode == 0, double.stderr[-3000:]
    assert double.stdout.count("results: ") == 1  # only rank 0, which writes the record, prints its path
    one, two = read_results(tmp_path / "one" / "results.json"), read_results(tmp_path / "two" / "results.json")
    assert two["world_size"] == 2 and two["metrics"]["voc21"]["n_images"] == 3
    assert two["metrics"] == one["metrics"]  # integer sums: exactly equal, no image counted twice
    for name in ("candidates", "cls_entropy", "norm_ratio"):
        assert two["outlier_stats"]["voc21"][name] == pytest.approx(one["outlier_stats"]["voc21"][name], rel=1e-6)
    assert two["outlier_stats"]["voc21"]["n_crops"] == one["outlier_stats"]["voc21"]["n_crops"]
