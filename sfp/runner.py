"""One job: load the model once, evaluate every configured dataset, log to W&B and write results.json.

Independent of Hydra: `run_job(cfg, output_dir, choices)` works from a notebook with `sfp.compose(...)`. The
config is turned into typed settings once, on entry; the device is resolved once, here, and passed down.
"""
from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from .assembly import ConfigLike, build_model, to_run_config
from .config.schema import COMPONENT_GROUPS, RunConfig, settings_dict
from .data import SegmentationDataset, build_dataset
from .engine.device import resolve_device
from .engine.distributed import Ranks, gather_objects, init_from_env, shard, sum_tensor
from .methods.stats import LayerStatsAccumulator
from .metrics import IoUAccumulator
from .models.dense import DenseModel
from .segmenter import Segmenter
from .tracking.resume import config_fingerprint, refuse_other_configuration
from .tracking.results_store import RESULTS_FILENAME, ResultsError, build_record, to_jsonable, write_json_atomic
from .tracking.wandb_tracker import make_tracker

log = logging.getLogger(__name__)


@dataclass
class DatasetOutcome:
    metrics: Dict[str, Any]
    protocol: Dict[str, Any]
    class_file_sha256: str
    seconds: float
    overlays: List[Tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=list)
    outlier_stats: Dict[str, Any] = field(default_factory=dict)


def resolved_config(cfg: ConfigLike) -> Dict[str, Any]:
    """The complete settings of a run as plain values (every default included), as every record stores them."""
    return settings_dict(to_run_config(cfg))


def tracker_config(config: Dict[str, Any], choices: Dict[str, str]) -> Dict[str, Any]:
    """The W&B run config: the resolved config plus each group choice as a flat `<group>_choice` column."""
    flat = {f"{group.replace('/', '_')}_choice": str(value) for group, value in choices.items()}
    return {**config, **flat}


def run_job(cfg: ConfigLike, output_dir: str | Path, choices: Optional[Dict[str, str]] = None,
            group: Optional[str] = None, job_name: Optional[str] = None, job_number: int = 0) -> Dict[str, Any]:
    """Evaluate every dataset of `cfg` and return the record written to `<output_dir>/results.json`.

    job_number: the job's index in a sweep; with several GPUs and `inference.device=auto`, job k takes GPU
    k mod (number of GPUs)."""
    run = to_run_config(cfg)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    choices = dict(choices or {})
    config = settings_dict(run)
    refuse_other_configuration(output_dir, config)  # a finished record of another configuration stays as it is
    ranks = init_from_env()  # several processes under torchrun: rank 0 logs and writes
    tracker = make_tracker(
        run.tracker.backend.value if ranks.is_main else "none",
        project=run.tracker.project, entity=run.tracker.entity, mode=run.tracker.mode.value,
        group=run.tracker.group or group, name=job_name, tags=list(run.tracker.tags),
        config=tracker_config(config, choices), dir=str(output_dir),
    )
    started = time.perf_counter()
    metrics: Dict[str, Any] = {}
    timing: Dict[str, Any] = {}
    class_files: Dict[str, str] = {}
    protocols: Dict[str, Any] = {}
    outlier_stats: Dict[str, Any] = {}
    model_info: Dict[str, Any] = {}

    def write(status: str) -> Dict[str, Any]:
        record = build_record(config, choices, metrics, timing, class_files, status=status,
                              extra={"protocol": protocols, "model": model_info, "outlier_stats": outlier_stats,
                                     "fingerprint": config_fingerprint(config), "world_size": ranks.world})
        if ranks.is_main:
            path = output_dir / RESULTS_FILENAME
            try:
                write_json_atomic(path, record)
            except OSError as exc:  # a full or read-only disk: the numbers must not be lost with the file
                print(f"metrics computed so far (not written to {path}):\n"
                      + json.dumps(to_jsonable(metrics), indent=2), file=sys.stderr, flush=True)
                error = ResultsError(f"could not write {path}: {exc.strerror or exc}; the metrics computed so far "
                                     "are printed above")
                if status == "complete":
                    raise error from exc
                log.error("%s; evaluation goes on and the record is written again after the next dataset", error)
        return record

    # Check every dataset's files before spending time on the model.
    datasets = {key: build_dataset(run.datasets[key], key=key) for key in run.datasets}
    with tracker:
        load_started = time.perf_counter()
        model = build_model(run, device=_device(run, ranks, job_number))
        timing["model_load_s"] = time.perf_counter() - load_started
        model_info.update(source=model.source, is_real_clip=model.is_real_clip)
        _warn_unused_components(run, model)
        for key, dataset in datasets.items():
            outcome = evaluate_dataset(run, dataset, model, output_dir, ranks)
            metrics[key] = outcome.metrics
            protocols[key] = outcome.protocol
            class_files[key] = outcome.class_file_sha256
            if outcome.outlier_stats:
                outlier_stats[key] = outcome.outlier_stats
                tracker.log_layer_stats(key, outcome.outlier_stats)
            timing[key] = {"seconds": outcome.seconds,
                           "images_per_s": outcome.metrics["n_images"] / max(outcome.seconds, 1e-9)}
            tracker.log_dataset(key, outcome.metrics, list(outcome.metrics["per_class_iou"]), outcome.overlays)
            write("partial")  # a crash in a later dataset keeps this one
        mean = float(np.mean([m["miou"] for m in metrics.values()])) if metrics else float("nan")
        tracker.log_summary({"miou/mean": mean})
        timing["total_s"] = time.perf_counter() - started
        return write("complete")


def evaluate_dataset(run: RunConfig, dataset: SegmentationDataset, model: DenseModel, output_dir: Path,
                     ranks: Ranks = Ranks()) -> DatasetOutcome:
    started = time.perf_counter()
    key = dataset.key
    segmenter = Segmenter(run, dataset=key, model=model, class_names=dataset.class_names)
    accumulator = IoUAccumulator(dataset.num_classes)
    prediction_dir = output_dir / "predictions" / key if run.save_predictions else None
    if prediction_dir is not None:
        prediction_dir.mkdir(parents=True, exist_ok=True)
    overlays: List[Tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    stats = LayerStatsAccumulator() if run.stats.enabled else None
    images = Subset(dataset, shard(len(dataset), ranks)) if ranks.enabled else dataset
    loader = DataLoader(images, batch_size=run.inference.images_per_batch, shuffle=False,
                        num_workers=run.inference.num_workers, collate_fn=list)
    for batch in tqdm(loader, desc=key, unit="batch", dynamic_ncols=True, disable=not ranks.is_main):
        predictions = segmenter.predict_batch([sample.image for sample in batch],
                                              aux_sink=stats.update if stats is not None else None,
                                              names=[f"dataset {key!r}, image {sample.image_path}" for sample in batch])
        for sample, prediction in zip(batch, predictions):
            accumulator.update(prediction, sample.label)
            if prediction_dir is not None:
                save_label_png(prediction, prediction_dir / f"{sample.name}.png")
            if ranks.is_main and len(overlays) < run.tracker.num_overlays:
                overlays.append((sample.image, prediction, sample.label))
    if ranks.enabled:  # global sums of intersections and unions, never an average of per-rank mIoUs
        n_images = int(sum_tensor(torch.tensor([accumulator.n_images]), ranks).item())
        accumulator = IoUAccumulator.from_state_tensor(sum_tensor(accumulator.state_tensor(), ranks),
                                                       n_images=n_images)
        if stats is not None:
            gathered = gather_objects(stats, ranks)  # every rank must take part
            for other in gathered[1:] if ranks.is_main else []:
                stats.merge(other)
    metrics = accumulator.compute().as_record(class_display_names(dataset, segmenter.protocol.prob_thd))
    return DatasetOutcome(metrics, segmenter.protocol.as_dict(), dataset.class_names.sha256,
                          time.perf_counter() - started, overlays, stats.result() if stats is not None else {})


def _device(run: RunConfig, ranks: Ranks, job_number: int) -> torch.device:
    """Under torchrun each rank takes its own GPU (LOCAL_RANK); otherwise the config decides."""
    if ranks.enabled and torch.cuda.is_available() and run.inference.device in ("auto", "cuda"):
        return torch.device("cuda", ranks.local_rank)
    return resolve_device(run.inference.device, job_number)


def class_display_names(dataset: SegmentationDataset, prob_thd: float) -> List[str]:
    """First synonym of each class; a background line given as a list of stuff words shows as 'background'."""
    names = list(dataset.class_names.display_names)
    if prob_thd > 0 and len(dataset.class_names.synonyms[0]) > 1:
        names[0] = "background"
    return names


def save_label_png(labels: np.ndarray, path: Path) -> None:
    """Class indices as an 8-bit PNG (16-bit when there are more than 255 classes)."""
    image = Image.fromarray(labels.astype(np.uint8)) if labels.max(initial=0) < 256 else \
        Image.fromarray(labels.astype(np.uint16))
    tmp = path.with_suffix(".tmp.png")
    image.save(tmp)
    tmp.replace(path)


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


def _pct(value: Optional[float]) -> str:
    return f"{value:>8.2f}" if value is not None and not np.isnan(value) else f"{'n/a':>8}"
