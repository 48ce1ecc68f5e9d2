"""One pass over one dataset for one or several variants of a model: images decoded, resized and windowed
once, the backbone's shared blocks run once per batch of windows, then each variant's logits, labels,
metric, statistics, saved predictions and overlays (`sfp.grouping` says which variants may share a pass)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from .config.schema import RunConfig
from .data import SegmentationDataset
from .engine.distributed import Ranks, gather_objects, shard, sum_tensor
from .errors import DataError, NumericalError
from .grouping import GroupedSegmenter
from .methods.stats import LayerStatsAccumulator
from .metrics import IoUAccumulator
from .models.dense import DenseModel
from .tracking.per_image import PerImageAreas


@dataclass
class DatasetOutcome:
    metrics: Dict[str, Any]
    protocol: Dict[str, Any]
    class_file_sha256: str
    seconds: float
    overlays: List[Tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=list)
    outlier_stats: Dict[str, Any] = field(default_factory=dict)
    areas: Optional[torch.Tensor] = None  # (4, classes) int64: intersections, unions, predicted, labelled pixels
    per_image: Optional[PerImageAreas] = None  # the same counts per image; they sum to `areas` exactly


def evaluate_dataset(run: RunConfig, dataset: SegmentationDataset, model: DenseModel, output_dir: Path,
                     ranks: Ranks = Ranks()) -> DatasetOutcome:
    """One variant's pass over `dataset` (see `evaluate_dataset_group`); raises the error that stopped it."""
    [outcome] = evaluate_dataset_group([run], dataset, [model], [output_dir], ranks)
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome


def evaluate_dataset_group(runs: Sequence[RunConfig], dataset: SegmentationDataset, models: Sequence[DenseModel],
                           output_dirs: Sequence[Path], ranks: Ranks = Ranks(),
                           live: Optional[Sequence[bool]] = None) -> List[Any]:
    """One pass over `dataset` for several variants: images are decoded, resized and windowed once, the
    backbone's shared blocks run once per batch of windows. Returns per variant its DatasetOutcome, the
    SFPError that stopped it, or None when live[i] was False."""
    started = time.perf_counter()
    key, lead = dataset.key, runs[0]
    live = list(live) if live is not None else [True] * len(runs)
    segmenter = GroupedSegmenter(runs, models, key, class_names=dataset.class_names)
    accumulators = [IoUAccumulator(dataset.num_classes) for _ in runs]
    image_areas: List[List[Tuple[int, str, np.ndarray]]] = [[] for _ in runs]  # (dataset index, name, (4, C))
    indices = shard(len(dataset), ranks) if ranks.enabled else list(range(len(dataset)))
    prediction_dirs = [output_dir / "predictions" / key if run.save_predictions else None
                       for run, output_dir in zip(runs, output_dirs)]
    for directory in prediction_dirs:
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)
    overlays: List[List[Tuple[np.ndarray, np.ndarray, np.ndarray]]] = [[] for _ in runs]
    stats = [LayerStatsAccumulator() if run.stats.enabled else None for run in runs]
    errors: Dict[int, BaseException] = {}
    images = Subset(dataset, indices) if ranks.enabled else dataset
    position = 0
    loader = DataLoader(images, batch_size=lead.inference.images_per_batch, shuffle=False,
                        num_workers=lead.inference.num_workers, collate_fn=list)
    description = key if len(runs) == 1 else f"{key} ({sum(live)} variants, {segmenter.trunks} trunks)"
    for batch in tqdm(loader, desc=description, unit="batch", dynamic_ncols=True, disable=not ranks.is_main):
        active = [ok and i not in errors for i, ok in enumerate(live)]
        if not any(active):
            break
        predictions = segmenter.predict_batch(
            [sample.image for sample in batch], [s.update if s is not None else None for s in stats],
            names=[f"dataset {key!r}, image {sample.image_path}" for sample in batch], live=active)
        batch_indices = indices[position:position + len(batch)]
        position += len(batch)
        for i, variant_predictions in enumerate(predictions):
            if variant_predictions is None:
                continue
            if isinstance(variant_predictions, BaseException):
                errors[i] = variant_predictions
                continue
            for index, sample, prediction in zip(batch_indices, batch, variant_predictions):
                counts = accumulators[i].update(prediction, sample.label)
                image_areas[i].append((index, sample.name, counts.numpy()))
                if prediction_dirs[i] is not None:
                    save_label_png(prediction, prediction_dirs[i] / f"{sample.name}.png")
                if ranks.is_main and len(overlays[i]) < runs[i].tracker.num_overlays:
                    overlays[i].append((sample.image, prediction, sample.label))
    seconds = time.perf_counter() - started
    if ranks.enabled:  # a variant that failed on any rank fails on every rank, so all take the same reductions
        failed = sum_tensor(torch.tensor([float(i in errors) for i in range(len(runs))]), ranks)
        for i in map(int, torch.nonzero(failed).flatten()):
            errors.setdefault(i, NumericalError(f"dataset {key!r}: the variant failed on another rank"))
    outcomes: List[Any] = []
    for i, run in enumerate(runs):
        if not live[i]:
            outcomes.append(None)
            continue
        if i in errors:
            outcomes.append(errors[i])
            continue
        accumulator, variant_stats, per_image = accumulators[i], stats[i], image_areas[i]
        if ranks.enabled:
            accumulator, variant_stats = _reduce(accumulator, variant_stats, ranks)
            per_image = [entry for part in gather_objects(per_image, ranks) for entry in part]
        protocol = segmenter.segmenters[i].protocol
        names = class_display_names(dataset, protocol.prob_thd)
        metrics = accumulator.compute().as_record(names)
        outcomes.append(DatasetOutcome(metrics, protocol.as_dict(), dataset.class_names.sha256, seconds,
                                       overlays[i], variant_stats.result() if variant_stats is not None else {},
                                       accumulator.state_tensor(), _per_image_table(per_image, names, key)))
    return outcomes


def _per_image_table(entries: List[Tuple[int, str, np.ndarray]], class_names: List[str],
                     key: str) -> PerImageAreas:
    """The images' counts in dataset order (ranks evaluate interleaved shards)."""
    entries = sorted(entries, key=lambda entry: entry[0])
    c = len(class_names)
    areas = np.stack([entry[2] for entry in entries]) if entries else np.zeros((0, 4, c), dtype=np.int64)
    try:
        return PerImageAreas([entry[1] for entry in entries], areas, areas[:, 3, :].sum(axis=1), class_names)
    except ValueError as exc:
        raise DataError(f"dataset {key!r}: {exc} (image names key the per-image records)") from None


def _reduce(accumulator: IoUAccumulator, stats: Optional[LayerStatsAccumulator],
            ranks: Ranks) -> Tuple[IoUAccumulator, Optional[LayerStatsAccumulator]]:
    """Global sums of intersections and unions, never an average of per-rank mIoUs; statistics merged."""
    n_images = int(sum_tensor(torch.tensor([accumulator.n_images]), ranks).item())
    accumulator = IoUAccumulator.from_state_tensor(sum_tensor(accumulator.state_tensor(), ranks), n_images=n_images)
    if stats is not None:
        gathered = gather_objects(stats, ranks)  # every rank must take part
        for other in gathered[1:] if ranks.is_main else []:
            stats.merge(other)
    return accumulator, stats


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
