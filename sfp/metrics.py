"""Semantic-segmentation metrics, computed as mmsegmentation's IoUMetric computes them.

Per class, intersection, union, predicted area and label area are SUMMED over every image of the
split; IoU and accuracy are ratios of those sums (never means of per-image ratios). Classes whose
union (for IoU) or label area (for accuracy) is zero are NaN and skipped by the means.
All percentages are unrounded; round only for display.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, List, Sequence

import numpy as np
import torch

from sfp.data.sample import IGNORE_INDEX
from sfp.errors import DataError

__all__ = ["IoUAccumulator", "SegmentationMetrics"]


@dataclass
class SegmentationMetrics:
    miou: float  # percent; NaN when no class occurs in prediction or ground truth
    aacc: float  # percent
    macc: float  # percent
    per_class_iou: List[float]  # percent; NaN where the class's union is empty
    per_class_acc: List[float]  # percent; NaN where the class has no labelled pixel
    n_pixels: int  # labelled (non-ignored) pixels counted
    n_images: int = 0

    def as_record(self, class_names: Sequence[str]) -> Dict[str, Any]:
        """The per-dataset entry of a results record ({"miou", ..., "per_class_iou": {name: iou}})."""
        if len(class_names) != len(self.per_class_iou):
            raise ValueError(
                f"{len(class_names)} class names given for {len(self.per_class_iou)} classes"
            )
        return {
            "miou": self.miou,
            "aacc": self.aacc,
            "macc": self.macc,
            "per_class_iou": dict(zip(class_names, self.per_class_iou)),
            "per_class_acc": dict(zip(class_names, self.per_class_acc)),
            "n_images": self.n_images,
            "n_pixels": self.n_pixels,
        }


def _as_int64(x: Any, what: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        t = x
    else:
        arr = np.asarray(x)
        if arr.dtype.kind not in "biu":
            raise TypeError(f"{what} must hold integers, got dtype {arr.dtype}")
        t = torch.tensor(arr.astype(np.int64, copy=False))
    if t.dtype.is_floating_point or t.dtype.is_complex:
        raise TypeError(f"{what} must hold integers (class indices), got dtype {t.dtype}")
    return t.to(torch.int64)


class IoUAccumulator:
    """Accumulates per-class areas over a split; `compute()` turns them into metrics.

    State lives on the CPU as int64 (exact for any split size); `state_tensor()` stacks it for an
    all_reduce(SUM) across processes and `from_state_tensor()` rebuilds an accumulator from it.
    """

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX):
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        self.num_classes = num_classes
        self.ignore_index = int(ignore_index)
        self.area_intersect = torch.zeros(num_classes, dtype=torch.int64)
        self.area_union = torch.zeros(num_classes, dtype=torch.int64)
        self.area_pred = torch.zeros(num_classes, dtype=torch.int64)
        self.area_label = torch.zeros(num_classes, dtype=torch.int64)
        self.n_images = 0

    def update(self, pred: Any, label: Any) -> torch.Tensor:
        """Add one image: `pred` and `label` are (H, W) integer class maps of the same shape. Returns the
        image's own (4, num_classes) counts (rows as in `state_tensor()`)."""
        p = _as_int64(pred, "pred")
        lab = _as_int64(label, "label")
        if tuple(p.shape) != tuple(lab.shape):
            raise ValueError(
                f"pred shape {tuple(p.shape)} does not match label shape {tuple(lab.shape)}"
            )
        if lab.device != p.device:
            lab = lab.to(p.device)
        p = p.reshape(-1)
        lab = lab.reshape(-1)
        c = self.num_classes

        # A class index out of range is a bug upstream: dropping it would bias the metric silently.
        bad = (p < 0) | (p >= c)
        if bool(bad.any()):
            values = torch.unique(p[bad])[:5].tolist()
            raise ValueError(
                f"pred holds class index {values[0]} outside [0, {c})"
                + (f" (out-of-range values include {values})" if len(values) > 1 else "")
            )
        keep = lab != self.ignore_index
        p = p[keep]
        lab = lab[keep]
        bad = (lab < 0) | (lab >= c)
        if bool(bad.any()):
            values = torch.unique(lab[bad])[:5].tolist()
            raise DataError(
                f"label holds value {values[0]} outside [0, {c}) that is not the ignore index "
                f"{self.ignore_index} (wrong reduce_zero_label or class count?); "
                f"out-of-range values include {values}"
            )

        hit = p[p == lab]
        area_intersect = torch.bincount(hit, minlength=c).cpu()
        area_pred = torch.bincount(p, minlength=c).cpu()
        area_label = torch.bincount(lab, minlength=c).cpu()
        self.area_intersect += area_intersect
        self.area_pred += area_pred
        self.area_label += area_label
        self.area_union = self.area_pred + self.area_label - self.area_intersect
        self.n_images += 1
        return torch.stack([area_intersect, area_pred + area_label - area_intersect, area_pred, area_label])

    def merge(self, other: "IoUAccumulator") -> None:
        """Add another accumulator's sums (e.g. from another process or shard)."""
        if other.num_classes != self.num_classes or other.ignore_index != self.ignore_index:
            raise ValueError(
                f"cannot merge an accumulator of {other.num_classes} classes (ignore "
                f"{other.ignore_index}) into one of {self.num_classes} (ignore {self.ignore_index})"
            )
        self.area_intersect += other.area_intersect
        self.area_pred += other.area_pred
        self.area_label += other.area_label
        self.area_union = self.area_pred + self.area_label - self.area_intersect
        self.n_images += other.n_images

    def state_tensor(self) -> torch.Tensor:
        """(4, num_classes) int64: rows intersect, union, pred, label. Sum-reducible across processes."""
        return torch.stack(
            [self.area_intersect, self.area_union, self.area_pred, self.area_label]
        ).clone()

    @classmethod
    def from_state_tensor(
        cls, state: torch.Tensor, ignore_index: int = IGNORE_INDEX, n_images: int = 0
    ) -> "IoUAccumulator":
        """Rebuild from `state_tensor()` output (possibly all-reduced); n_images is not in the state."""
        state = torch.as_tensor(state)
        if state.dim() != 2 or state.shape[0] != 4:
            raise ValueError(f"state must have shape (4, num_classes), got {tuple(state.shape)}")
        acc = cls(int(state.shape[1]), ignore_index)
        state = state.detach().to("cpu", torch.int64)
        acc.area_intersect = state[0].clone()
        acc.area_union = state[1].clone()
        acc.area_pred = state[2].clone()
        acc.area_label = state[3].clone()
        acc.n_images = int(n_images)
        return acc

    def compute(self) -> SegmentationMetrics:
        inter = self.area_intersect.numpy().astype(np.float64)
        union = self.area_union.numpy().astype(np.float64)
        label = self.area_label.numpy().astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = np.where(union > 0, inter / union, np.nan)
            acc = np.where(label > 0, inter / label, np.nan)
        total = label.sum()
        return SegmentationMetrics(
            miou=_nanmean(iou) * 100.0,
            aacc=(inter.sum() / total * 100.0) if total > 0 else math.nan,
            macc=_nanmean(acc) * 100.0,
            per_class_iou=[float(v) * 100.0 for v in iou],
            per_class_acc=[float(v) * 100.0 for v in acc],
            n_pixels=int(total),
            n_images=self.n_images,
        )

    def __repr__(self) -> str:
        return (
            f"IoUAccumulator(num_classes={self.num_classes}, ignore_index={self.ignore_index}, "
            f"n_images={self.n_images}, n_pixels={int(self.area_label.sum())})"
        )


def _nanmean(values: np.ndarray) -> float:
    valid = values[~np.isnan(values)]
    return float(valid.mean()) if valid.size else math.nan
