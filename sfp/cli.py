"""The command line: compose the config with Hydra, run one evaluation job, print its table.

    python -m sfp                                   # the embedded demo (same as `python main.py`)
    python -m sfp -m mitigator=on,off enhancer=on,off
    python -m sfp backbone=vit_l14 datasets=[voc21,ade20k] paths.data_root=/data/seg
"""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from .assembly import register_schemas, run_choices, to_run_config
from .config.locations import conf_dir
from .errors import SFPError
from .runner import Job, evaluate_jobs, print_result

log = logging.getLogger("sfp")
register_schemas()


def hydra_job(cfg: DictConfig, hydra_cfg: Any) -> Job:
    """The typed job of a composed config and its Hydra runtime (output directory, choices, sweep names)."""
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    job_number = hydra_cfg.job.num if multirun else 0
    return Job(
        to_run_config(cfg), Path(hydra_cfg.runtime.output_dir), run_choices(hydra_cfg.runtime.choices),
        group=Path(hydra_cfg.sweep.dir).name if multirun else None,
        name=hydra_cfg.job.override_dirname or "default",
        number=job_number if isinstance(job_number, int) else 0,
    )


@hydra.main(config_path=str(conf_dir()), config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """One job (a single run, or a sweep's job under a launcher that runs jobs one by one)."""
    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    try:
        [result] = evaluate_jobs([hydra_job(cfg, hydra_cfg)])
        if result.error is not None:
            raise result.error
    except SFPError as exc:
        log.error("%s", exc)
        if multirun:
            raise  # the launcher records the failure and runs the remaining jobs
        sys.exit(2)
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun only rank 0 writes the record, so it alone prints
        print_result(result)
