"""Entry point: compose the config with Hydra, run one evaluation job, print its table.

    python main.py                                   # the embedded demo
    python main.py -m mitigator=on,off enhancer=on,off
    python main.py backbone=vit_l14 datasets=[voc21,ade20k] paths.data_root=/data/seg
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from sfp.config.store import register_schema
from sfp.config.validate import validate_config
from sfp.errors import SFPError
from sfp.runner import format_table, resolved_config, run_job
from sfp.tracking.resume import completed_record, config_fingerprint

log = logging.getLogger("sfp")
register_schema()


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    choices = {k: v for k, v in hydra_cfg.runtime.choices.items() if not k.startswith("hydra/")}
    output_dir = Path(hydra_cfg.runtime.output_dir)
    try:
        validate_config(cfg)
        if cfg.resume:
            done = completed_record(output_dir, config_fingerprint(resolved_config(cfg)))
            if done is not None:
                log.info("resume: %s is complete for this configuration; skipping the job", done)
                return
        record = run_job(
            cfg, output_dir, choices,
            group=Path(hydra_cfg.sweep.dir).name if multirun else None,
            job_name=hydra_cfg.job.override_dirname or "default",
        )
    except SFPError as exc:
        log.error("%s", exc)
        if multirun:
            raise  # the launcher records the failure and runs the remaining jobs
        sys.exit(2)
    print(format_table(record))
    print(f"results: {output_dir / 'results.json'}")


if __name__ == "__main__":
    main()
