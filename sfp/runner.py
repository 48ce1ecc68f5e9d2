"""Jobs: load the model once, evaluate every configured dataset, log to W&B and write results.json per job.

Independent of Hydra: `run_job(cfg, output_dir, choices)` and `run_jobs(configs, output_dirs)` work from a
notebook with `sfp.compose(...)`. Jobs that can share a pass over the images (`sfp.grouping`) are evaluated
together, each still with its own record and W&B run. Configs are turned into typed settings once, on entry;
the device is resolved once per pass, here, and passed down.
"""
from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch

from .assembly import ConfigLike, build_variant_models, to_run_config
from .config.schema import COMPONENT_GROUPS, RunConfig, settings_dict
from .data import build_dataset
from .engine.device import resolve_device
from .engine.distributed import Ranks, init_from_env
from .errors import SFPError
from .evaluation import DatasetOutcome, evaluate_dataset_group
from .grouping import group_indices
from .models.dense import DenseModel
from .models.templates import template_record
from .tracking import logged_keys
from .tracking.per_image import AREA_NAMES, record_entry
from .tracking.resume import completed_record, config_fingerprint, refuse_other_configuration
from .tracking.results_store import (
    RESULTS_FILENAME, ResultsError, build_record, read_results, to_jsonable, write_json_atomic,
)
from .tracking.wandb_tracker import make_tracker

log = logging.getLogger(__name__)


def resolved_config(cfg: ConfigLike) -> Dict[str, Any]:
    """The complete settings of a run as plain values (every default included), as every record stores them."""
    return settings_dict(to_run_config(cfg))


def tracker_config(config: Dict[str, Any], choices: Dict[str, str]) -> Dict[str, Any]:
    """The W&B run config: the resolved config plus each group choice as a flat `<group>_choice` column."""
    flat = {logged_keys.CHOICE.key(group=group.replace("/", "_")): str(value) for group, value in choices.items()}
    return {**config, **flat}


@dataclass
class Job:
    """One configuration to evaluate, and where and under which names its record and W&B run go."""

    run: RunConfig
    output_dir: Path
    choices: Dict[str, str] = field(default_factory=dict)
    group: Optional[str] = None  # the W&B group (default: tracker.group)
    name: Optional[str] = None  # the W&B run name
    number: int = 0  # the job's index in a sweep (picks the GPU with inference.device=auto)


@dataclass
class JobResult:
    """What became of one job: its record, or the error that stopped it; `resumed` when it was already done."""

    output_dir: Path
    record: Optional[Dict[str, Any]] = None
    error: Optional[BaseException] = None
    resumed: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None


def run_job(cfg: ConfigLike, output_dir: str | Path, choices: Optional[Dict[str, str]] = None,
            group: Optional[str] = None, job_name: Optional[str] = None, job_number: int = 0) -> Dict[str, Any]:
    """Evaluate every dataset of `cfg` and return the record written to `<output_dir>/results.json`.

    job_number: the job's index in a sweep; with several GPUs and `inference.device=auto`, job k takes GPU
    k mod (number of GPUs). Raises the job's error."""
    job = Job(to_run_config(cfg), Path(output_dir), dict(choices or {}), group, job_name, job_number)
    [result] = evaluate_jobs([job])
    if result.error is not None:
        raise result.error
    return result.record


def run_jobs(configs: Sequence[ConfigLike], output_dirs: Sequence[str | Path],
             choices: Optional[Sequence[Dict[str, str]]] = None, group: Optional[str] = None,
             names: Optional[Sequence[str]] = None, grouped: bool = True,
             max_variants: Optional[int] = None) -> List[JobResult]:
    """Evaluate several configurations, each into its own output directory, sharing work where possible.

    Configurations that differ only in per-variant settings (method, components, statistics, templates,
    thresholds, ...) are evaluated in one pass over the images (see `sfp.grouping`); with grouped=False each
    is evaluated alone. Each job keeps its own results.json, W&B run and resume behaviour; a job that fails
    (invalid configuration, non-finite numbers) fails alone. Returns one JobResult per configuration."""
    if len(configs) != len(output_dirs):
        raise ValueError(f"{len(configs)} configurations but {len(output_dirs)} output directories")
    results: List[Optional[JobResult]] = [None] * len(configs)
    jobs: List[Job] = []
    positions: List[int] = []
    for index, (cfg, output_dir) in enumerate(zip(configs, output_dirs)):
        try:
            run = to_run_config(cfg)
        except SFPError as exc:
            log.error("job %d (%s): %s", index, output_dir, exc)
            results[index] = JobResult(Path(output_dir), error=exc)
            continue
        jobs.append(Job(run, Path(output_dir), dict(choices[index]) if choices else {}, group,
                        names[index] if names else None, index))
        positions.append(index)
    for position, result in zip(positions, evaluate_jobs(jobs, grouped=grouped, max_variants=max_variants)):
        results[position] = result
    return results


def evaluate_jobs(jobs: Sequence[Job], grouped: bool = True, max_variants: Optional[int] = None) -> List[JobResult]:
    """Evaluate typed jobs: resumed ones are skipped, the rest grouped into shared passes (see `run_jobs`)."""
    results: List[Optional[JobResult]] = [None] * len(jobs)
    pending: List[int] = []
    for index, job in enumerate(jobs):
        config = settings_dict(job.run)
        try:
            if job.run.resume:
                done = completed_record(job.output_dir, config_fingerprint(config))
                if done is not None:
                    log.info("resume: %s is complete for this configuration; skipping the job", done)
                    results[index] = JobResult(job.output_dir, read_results(done), resumed=True)
                    continue
            refuse_other_configuration(job.output_dir, config)  # another configuration's record stays as it is
        except SFPError as exc:
            log.error("%s", exc)
            results[index] = JobResult(job.output_dir, error=exc)
            continue
        pending.append(index)
    runs = [jobs[i].run for i in pending]
    groups = group_indices(runs, max_variants) if grouped else [[i] for i in range(len(runs))]
    for members in groups:
        indices = [pending[i] for i in members]
        for index, result in zip(indices, _evaluate_group([jobs[i] for i in indices])):
            results[index] = result
    return results


class _JobRecorder:
    """One job's record and W&B run while its group is evaluated: datasets are added as they finish."""

    def __init__(self, job: Job, ranks: Ranks, concurrent: bool):
        self.job, self.ranks = job, ranks
        job.output_dir.mkdir(parents=True, exist_ok=True)
        self.config = settings_dict(job.run)
        tracker = job.run.tracker
        self.tracker = make_tracker(
            tracker.backend.value if ranks.is_main else "none",
            project=tracker.project, entity=tracker.entity, mode=tracker.mode.value,
            group=tracker.group or job.group, name=job.name, tags=list(tracker.tags),
            config=tracker_config(self.config, job.choices), dir=str(job.output_dir),
            **({"settings": {"reinit": "create_new"}} if concurrent else {}),  # several runs open in one process
        )
        self.started = time.perf_counter()
        self.metrics: Dict[str, Any] = {}
        self.timing: Dict[str, Any] = {}
        self.class_files: Dict[str, str] = {}
        self.protocols: Dict[str, Any] = {}
        self.outlier_stats: Dict[str, Any] = {}
        self.model_info: Dict[str, Any] = {}
        self.evaluation: Dict[str, Any] = {}
        self.areas: Dict[str, Any] = {}
        self.per_image: Dict[str, Any] = {}
        self.error: Optional[BaseException] = None

    def write(self, status: str) -> Dict[str, Any]:
        record = build_record(self.config, self.job.choices, self.metrics, self.timing, self.class_files,
                              status=status,
                              extra={"protocol": self.protocols, "model": self.model_info,
                                     "outlier_stats": self.outlier_stats, "evaluation": self.evaluation,
                                     "areas": self.areas, "per_image": self.per_image,
                                     "templates": template_record(self.job.run.inference.templates),
                                     "fingerprint": config_fingerprint(self.config), "world_size": self.ranks.world})
        if self.ranks.is_main:
            path = self.job.output_dir / RESULTS_FILENAME
            try:
                write_json_atomic(path, record)
            except OSError as exc:  # a full or read-only disk: the numbers must not be lost with the file
                print(f"metrics computed so far (not written to {path}):\n"
                      + json.dumps(to_jsonable(self.metrics), indent=2), file=sys.stderr, flush=True)
                error = ResultsError(f"could not write {path}: {exc.strerror or exc}; the metrics computed so far "
                                     "are printed above")
                if status == "complete":
                    raise error from exc
                log.error("%s; evaluation goes on and the record is written again after the next dataset", error)
        return record

    def add_dataset(self, key: str, outcome: DatasetOutcome) -> None:
        self.metrics[key] = outcome.metrics
        self.protocols[key] = outcome.protocol
        self.class_files[key] = outcome.class_file_sha256
        if outcome.areas is not None:  # the exact sums the metrics come from
            self.areas[key] = dict(zip(AREA_NAMES, outcome.areas.tolist()))
        if outcome.per_image is not None and self.ranks.is_main:  # the same counts per image, file first
            try:
                self.per_image[key] = record_entry(self.job.output_dir, key, outcome.per_image)
            except OSError as exc:  # a full or read-only disk
                raise ResultsError(f"could not write the per-image file of {key!r} in {self.job.output_dir}: "
                                   f"{exc.strerror or exc}") from exc
        if outcome.outlier_stats:
            self.outlier_stats[key] = outcome.outlier_stats
            self.tracker.log_layer_stats(key, outcome.outlier_stats)
        self.timing[key] = {"seconds": outcome.seconds,
                            "images_per_s": outcome.metrics["n_images"] / max(outcome.seconds, 1e-9)}
        self.tracker.log_dataset(key, outcome.metrics, list(outcome.metrics["per_class_iou"]), outcome.overlays)
        self.write("partial")  # a crash in a later dataset keeps this one

    def complete(self) -> Dict[str, Any]:
        mean = float(np.mean([m["miou"] for m in self.metrics.values()])) if self.metrics else float("nan")
        self.tracker.log_summary({logged_keys.MIOU_MEAN.key(): mean})
        self.timing["total_s"] = time.perf_counter() - self.started
        return self.write("complete")


def _evaluate_group(jobs: Sequence[Job]) -> List[JobResult]:
    """Evaluate jobs that share a pass (see `sfp.grouping.group_key`): one model load, one pass per dataset."""
    ranks = init_from_env()  # several processes under torchrun: rank 0 logs and writes
    lead = jobs[0].run
    recorders: List[_JobRecorder] = []
    results: List[Optional[JobResult]] = [None] * len(jobs)
    try:
        # Check every dataset's files before spending time on the model.
        datasets = {key: build_dataset(lead.datasets[key], key=key) for key in lead.datasets}
        recorders = [_JobRecorder(job, ranks, concurrent=len(jobs) > 1) for job in jobs]
        for recorder in recorders:
            recorder.tracker.start()
        load_started = time.perf_counter()
        models = build_variant_models([job.run for job in jobs], _device(lead, ranks, jobs[0].number))
        load_s = time.perf_counter() - load_started
        if len(jobs) > 1:
            log.info("one pass for %d jobs: %s", len(jobs), ", ".join(str(job.name or job.output_dir) for job in jobs))
        for recorder, model in zip(recorders, models):
            recorder.timing["model_load_s"] = load_s
            recorder.model_info.update(source=model.source, is_real_clip=model.is_real_clip,
                                       weights_sha256=model.weights_sha256)
            vfm = getattr(model.method, "vfm", None)
            if vfm is not None:
                recorder.model_info["vfm_source"] = vfm.source
            if model.registers_report:
                recorder.model_info["registers"] = model.registers_report
                recorder.tracker.log_summary({logged_keys.REGISTER_NEURONS.key(): [f"{layer}:{neuron}" for layer, neuron
                                                                    in model.registers_report["neurons"]]})
            recorder.evaluation.update(jobs_in_pass=len(jobs))
            _warn_unused_components(recorder.job.run, model)
        live = [True] * len(jobs)
        for key, dataset in datasets.items():
            outcomes = evaluate_dataset_group([job.run for job in jobs], dataset, models,
                                              [job.output_dir for job in jobs], ranks, live)
            for i, outcome in enumerate(outcomes):
                if isinstance(outcome, BaseException):
                    _fail(recorders[i], outcome, f"dataset {key!r}")
                    live[i] = False
                elif outcome is not None:
                    recorders[i].add_dataset(key, outcome)
            if not any(live):
                break
        for i, recorder in enumerate(recorders):
            if not live[i]:
                results[i] = JobResult(recorder.job.output_dir, error=recorder.error)
                continue
            try:
                results[i] = JobResult(recorder.job.output_dir, recorder.complete())
            except SFPError as exc:  # this job's record could not be written
                results[i] = JobResult(recorder.job.output_dir, error=exc)
    except SFPError as exc:  # a failure of the whole pass (data files, weights): every job of it fails
        log.error("%s", exc)
        for i, job in enumerate(jobs):
            if results[i] is None:
                results[i] = JobResult(job.output_dir, error=exc)
    finally:
        for i, recorder in enumerate(recorders):
            recorder.tracker.finish(exit_code=0 if results[i] is not None and results[i].ok else 1)
    return results  # every entry is set: any other exception propagates


def _fail(recorder: _JobRecorder, error: BaseException, where: str) -> None:
    recorder.error = error
    log.error("job %s failed on %s: %s", recorder.job.name or recorder.job.output_dir, where, error)


def _device(run: RunConfig, ranks: Ranks, job_number: int) -> torch.device:
    """Under torchrun each rank takes its own GPU (LOCAL_RANK); otherwise the config decides."""
    if ranks.enabled and torch.cuda.is_available() and run.inference.device in ("auto", "cuda"):
        return torch.device("cuda", ranks.local_rank)
    return resolve_device(run.inference.device, job_number)


def _warn_unused_components(run: RunConfig, model: DenseModel) -> None:
    used = model.method.components
    ignored = [name for name in COMPONENT_GROUPS if getattr(run, name).enabled and name not in used]
    if ignored:
        log.warning("method %r does not use %s: these switches have no effect in this run",
                    run.method.name, ", ".join(f"{name}=on" for name in ignored))


def format_table(record: Dict[str, Any]) -> str:
    """A per-dataset mIoU / aAcc / mAcc table in percent, with a plain warning for non-CLIP models."""
    config = record["config"]
    switches = " ".join(f"{name}={'on' if config[name]['enabled'] else 'off'}" for name in COMPONENT_GROUPS)
    lines = [f"method={config['method']['name']} backbone={config['backbone']['name']} ({switches})",
             f"{'dataset':<14}{'mIoU':>8}{'aAcc':>8}{'mAcc':>8}{'images':>8}"]
    for key, m in record["metrics"].items():
        lines.append(f"{key:<14}{_pct(m['miou'])}{_pct(m['aacc'])}{_pct(m['macc'])}{m['n_images']:>8}")
    if len(record["metrics"]) > 1:
        values = [m["miou"] for m in record["metrics"].values() if m["miou"] is not None]
        lines.append(f"{'mean':<14}{_pct(float(np.mean(values)) if values else None)}")
    model = record.get("model", {})
    if not model.get("is_real_clip", True):
        lines.append(
            f"NOTE: backbone {config['backbone']['name']!r} is NOT a real CLIP (weights: {model.get('source')}). "
            "These numbers only show that the pipeline runs end to end; they say nothing about CLIP or SFP."
        )
    return "\n".join(lines)


def print_result(result: JobResult) -> None:
    """A finished job's table and record path, as the command line prints them (nothing for a resumed or
    failed job: their lines are in the log)."""
    if result.ok and not result.resumed:
        print(format_table(result.record))
        print(f"results: {result.output_dir / RESULTS_FILENAME}", flush=True)


def _pct(value: Optional[float]) -> str:
    return f"{value:>8.2f}" if value is not None and not np.isnan(value) else f"{'n/a':>8}"
