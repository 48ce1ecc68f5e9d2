"""Sweeps through Hydra's launcher plugins: local parallel (joblib), submitit_local, and the SLURM config."""
from __future__ import annotations

import pytest

import sfp
from sfp.tracking.results_store import read_results

from tests.test_main_cli import run_main


@pytest.mark.parametrize("launcher", ["local_parallel", "submitit_local"])
def test_a_sweep_through_a_launcher_plugin_gives_one_complete_record_per_job(tiny_voc, tmp_path, launcher):
    _, overrides = tiny_voc
    sweep = tmp_path / "sweep"
    result = run_main("-m", f"hydra/launcher={launcher}", "mitigator=on,off", *overrides,
                      f"hydra.sweep.dir={sweep}")
    assert result.returncode == 0, result.stderr[-3000:]
    records = [read_results(p) for p in sorted(sweep.glob("*/results.json"))]
    assert sorted(r["choices"]["mitigator"] for r in records) == ["off", "on"]
    assert all(r["status"] == "complete" for r in records)


def test_the_slurm_launcher_submits_one_gpu_task_per_group_and_logs_offline():
    launcher = sfp.compose_config(["hydra/launcher=slurm"], return_hydra_config=True).hydra.launcher
    assert launcher._target_ == "hydra_plugins.sfp_launcher.SFPLauncher" and launcher.group
    inner = launcher.inner
    assert inner._target_.endswith("SlurmLauncher")
    assert inner.gpus_per_node == 1 and inner.array_parallelism >= 1 and inner.timeout_min > 0
    assert "export WANDB_MODE=offline" in inner.setup


def test_sweep_directories_carry_microseconds_so_two_sweeps_started_in_one_second_stay_apart():
    import re

    first = sfp.compose_config([], return_hydra_config=True).hydra.sweep.dir
    second = sfp.compose_config([], return_hydra_config=True).hydra.sweep.dir
    assert re.search(r"/sweeps/\d{4}-\d{2}-\d{2}/\d{2}-\d{2}-\d{2}-\d{6}$", first), first
    assert first != second
