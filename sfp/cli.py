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

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from .assembly import register_schemas, run_choices, to_run_config
from .config.locations import conf_dir
from .config.schema import settings_dict
from .errors import SFPError
from .runner import format_table, run_job
from .tracking.resume import completed_record, config_fingerprint
from .tracking.results_store import RESULTS_FILENAME

log = logging.getLogger("sfp")
register_schemas()


@hydra.main(config_path=str(conf_dir()), config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    choices = run_choices(hydra_cfg.runtime.choices)
    output_dir = Path(hydra_cfg.runtime.output_dir)
    try:
        run = to_run_config(cfg)
        if run.resume:
            done = completed_record(output_dir, config_fingerprint(settings_dict(run)))
            if done is not None:
                log.info("resume: %s is complete for this configuration; skipping the job", done)
                return
        job_number = hydra_cfg.job.num if multirun else 0
        record = run_job(
            run, output_dir, choices,
            group=Path(hydra_cfg.sweep.dir).name if multirun else None,
            job_name=hydra_cfg.job.override_dirname or "default",
            job_number=job_number if isinstance(job_number, int) else 0,
        )
    except SFPError as exc:
        log.error("%s", exc)
        if multirun:
            raise  # the launcher records the failure and runs the remaining jobs
        sys.exit(2)
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun only rank 0 writes the record, so it alone prints
        print(format_table(record))
        print(f"results: {output_dir / RESULTS_FILENAME}")
