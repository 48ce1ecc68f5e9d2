"""The evaluation dataset: a layout's items, validated up front, loaded as `Sample`s."""
from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional

import numpy as np
import torch.utils.data
from PIL import Image, UnidentifiedImageError

from sfp.config.schema import DatasetConfig
from sfp.data.class_names import ClassNames, load_class_names
from sfp.data.layouts import LAYOUTS, DatasetLayout, Item
from sfp.data.sample import IGNORE_INDEX, Sample
from sfp.errors import ConfigError, DataError

_LABEL_MODES = ("P", "L", "I", "I;16")  # index images; RGB labels are colour renderings, not indices
_READ_ERRORS = (OSError, UnidentifiedImageError, SyntaxError, ValueError, Image.DecompressionBombError)


def reduce_zero_label(label: np.ndarray) -> np.ndarray:
    """0 -> 255 (ignored), every other label minus 1, 255 stays 255."""
    out = label.astype(np.int64) - 1
    out[label == 0] = IGNORE_INDEX
    out[label == IGNORE_INDEX] = IGNORE_INDEX
    return out


def load_image(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()
    except _READ_ERRORS as e:
        raise DataError(f"cannot read image {path}: {e}") from e


def load_label(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as img:
            mode = img.mode
            # Mode "P" reads as palette indices, which are the class ids.
            label = np.array(img) if mode in _LABEL_MODES else None
    except _READ_ERRORS as e:
        raise DataError(f"cannot read label map {path}: {e}") from e
    if label is None:
        raise DataError(
            f"label map {path} has mode {mode}; expected a palette or grayscale index image "
            f"(one of {', '.join(_LABEL_MODES)})"
        )
    return label.astype(np.int64)


def _config_value(cfg: Any, name: str) -> Any:
    try:
        return getattr(cfg, name)
    except Exception as e:  # omegaconf raises MissingMandatoryValue for "???"
        raise ConfigError(f"dataset config field {name!r} is not set: {e}") from e


class SegmentationDataset(torch.utils.data.Dataset):
    def __init__(
        self,
        key: str,
        layout: DatasetLayout,
        root: Path,
        split: str,
        class_names: ClassNames,
        reduce_zero_label: bool = False,
        max_images: Optional[int] = None,
    ):
        self.key = key
        self.layout = layout
        self.root = Path(root)
        self.split = split
        self.class_names = class_names
        self.num_classes = class_names.num_classes
        self.reduce_zero_label = bool(reduce_zero_label)
        self._who = f"dataset {key!r}" if key else "dataset"
        self.items: List[Item] = self._list_items(max_images)
        self._check_files_exist()

    def _list_items(self, max_images: Optional[int]) -> List[Item]:
        expected = f"expected the {self.layout.name} layout: {self.layout.describe(self.split)}"
        if not self.root.is_dir():
            raise DataError(
                f"{self._who}: root folder not found: {self.root} ({expected}; set paths.data_root=<folder "
                f"holding your datasets> or datasets.{self.key or '<key>'}.root=<this layout's folder>)"
            )
        try:
            items = self.layout.list_items(self.root, self.split)
        except DataError as e:
            raise DataError(f"{self._who}: {e} ({expected})") from e
        if max_images is not None:
            if max_images < 1:
                raise ConfigError(f"{self._who}: max_images must be >= 1 or null, got {max_images}")
            items = items[:max_images]
        return items

    def _check_files_exist(self) -> None:
        # Checked up front so a long run does not die on image 4,000 of 5,000.
        missing = [p for it in self.items for p in (it.image_path, it.label_path) if not p.is_file()]
        if missing:
            raise DataError(
                f"{self._who}: {len(missing)} image/label file(s) missing for {len(self.items)} images "
                f"(split {self.split!r}); first missing: {missing[0]}"
            )

    @property
    def names(self) -> List[str]:
        return [it.name for it in self.items]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Sample:
        if not -len(self.items) <= i < len(self.items):
            raise IndexError(f"{self._who}: index {i} out of range for {len(self.items)} images")
        item = self.items[i]
        image = load_image(item.image_path)
        label = load_label(item.label_path)
        if label.shape != image.shape[:2]:
            raise DataError(
                f"{self._who}: label map {item.label_path} is {label.shape[1]}x{label.shape[0]} (WxH) but its "
                f"image {item.image_path} is {image.shape[1]}x{image.shape[0]}"
            )
        raw = label
        if self.reduce_zero_label:
            label = reduce_zero_label(label)
        self._check_label_values(label, raw, item)
        return Sample(image=image, label=label, name=item.name, image_path=str(item.image_path))

    def _check_label_values(self, label: np.ndarray, raw: np.ndarray, item: Item) -> None:
        bad = (label != IGNORE_INDEX) & ((label < 0) | (label >= self.num_classes))
        if not bad.any():
            return
        values = np.unique(label[bad])
        shown = ", ".join(str(v) for v in values[:10]) + (", ..." if len(values) > 10 else "")
        note = ""
        if self.reduce_zero_label:
            raw_values = np.unique(raw[bad])
            note = " after reduce_zero_label (file values " + ", ".join(str(v) for v in raw_values[:10]) + ")"
        raise DataError(
            f"{self._who}: label map {item.label_path} has values {shown}{note} outside the allowed range "
            f"[0, {self.num_classes}) (or 255 = ignore); {self.num_classes} classes from "
            f"{self.class_names.path}"
        )


def build_dataset(cfg: DatasetConfig, key: str = "") -> SegmentationDataset:
    """Builds the dataset a `DatasetConfig` describes (a typed OmegaConf node of one works too)."""
    layout_name = _config_value(cfg, "layout")
    if layout_name not in LAYOUTS:
        raise ConfigError(
            f"dataset {key!r}: unknown layout {layout_name!r}; registered: {', '.join(LAYOUTS.names())}"
        )
    root = _config_value(cfg, "root")
    if root in (None, "", "???"):
        raise ConfigError(f"dataset {key!r}: root is not set")
    class_names = load_class_names(_config_value(cfg, "class_names"))
    return SegmentationDataset(
        key=key,
        layout=LAYOUTS.get(layout_name)(),
        root=Path(str(root)).expanduser(),
        split=_config_value(cfg, "split"),
        class_names=class_names,
        reduce_zero_label=_config_value(cfg, "reduce_zero_label"),
        max_images=getattr(cfg, "max_images", None),
    )


__all__ = ["SegmentationDataset", "build_dataset", "reduce_zero_label", "IGNORE_INDEX"]
