"""On-disk layouts of the benchmarks, as mmsegmentation users already have them.

A layout turns (root, split) into the ordered list of (name, image, label) items. A new layout is one
class registered in LAYOUTS. Layouts only list files; existence of every file is checked by the dataset.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List

from sfp.errors import DataError
from sfp.registry import Registry


@dataclass(frozen=True)
class Item:
    name: str
    image_path: Path
    label_path: Path


class DatasetLayout(ABC):
    """Base class; subclasses implement `list_items` and `describe`."""

    name: str = ""  # set by register_layout

    @abstractmethod
    def describe(self, split: str) -> str:
        """Implemented by each layout."""

    @abstractmethod
    def list_items(self, root: Path, split: str) -> List[Item]:
        """Implemented by each layout."""


LAYOUTS: Registry[type] = Registry("dataset layout")


def register_layout(name: str):
    """Registers a layout class under `name`, its one spelling (also its `name` attribute, for messages)."""
    def decorator(cls):
        cls.name = name
        return LAYOUTS.register(name)(cls)

    return decorator


def _require_dir(path: Path, what: str) -> None:
    if not path.is_dir():
        raise DataError(f"{what} folder not found: {path}")


class SplitFileLayout(DatasetLayout):
    """Ids listed one per line in a split file; image and label paths derived from the id."""

    image_dir = "JPEGImages"
    label_dir = ""
    split_dir = ""
    image_ext = ".jpg"
    label_ext = ".png"

    def describe(self, split: str) -> str:
        return (
            f"{self.image_dir}/<id>{self.image_ext}, {self.label_dir}/<id>{self.label_ext}, "
            f"{self.split_dir}/{split}.txt"
        )

    def read_ids(self, root: Path, split: str) -> List[str]:
        split_file = root / self.split_dir / f"{split}.txt"
        if not split_file.is_file():
            raise DataError(f"split file not found: {split_file}")
        try:
            lines = split_file.read_text().splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise DataError(f"cannot read split file {split_file}: {e}") from e
        ids = [line.strip() for line in lines if line.strip()]
        if not ids:
            raise DataError(f"split file lists no images: {split_file}")
        first_line: Dict[str, int] = {}
        for lineno, line in enumerate(lines, start=1):
            image_id = line.strip()
            if image_id and image_id in first_line:  # it would be counted twice in every sum of the metric
                raise DataError(f"split file {split_file}, lines {first_line[image_id]} and {lineno}: image "
                                f"{image_id!r} is listed twice")
            first_line.setdefault(image_id, lineno)
        return ids

    def list_items(self, root: Path, split: str) -> List[Item]:
        return [
            Item(
                name=i,
                image_path=root / self.image_dir / f"{i}{self.image_ext}",
                label_path=root / self.label_dir / f"{i}{self.label_ext}",
            )
            for i in self.read_ids(root, split)
        ]


@register_layout("voc")
class VocLayout(SplitFileLayout):
    label_dir = "SegmentationClass"
    split_dir = "ImageSets/Segmentation"


@register_layout("context")
class ContextLayout(SplitFileLayout):
    label_dir = "SegmentationClassContext"
    split_dir = "ImageSets/SegmentationContext"


class FolderLayout(DatasetLayout):
    """Images found by scanning one folder (sorted by name); labels in a parallel folder."""

    image_glob = "*.jpg"
    label_suffix = ".png"  # appended to the image stem

    def split_folder(self, split: str) -> str:
        return split

    @abstractmethod
    def image_dir(self, root: Path, split: str) -> Path:
        """Implemented by each layout."""

    @abstractmethod
    def label_dir(self, root: Path, split: str) -> Path:
        """Implemented by each layout."""

    def describe(self, split: str) -> str:
        root = Path("<root>")
        img = self.image_dir(root, split).relative_to(root)
        lab = self.label_dir(root, split).relative_to(root)
        return f"{img}/{self.image_glob}, {lab}/<stem>{self.label_suffix}"

    def list_items(self, root: Path, split: str) -> List[Item]:
        image_dir = self.image_dir(root, split)
        _require_dir(image_dir, "image")
        images = sorted(p for p in image_dir.glob(self.image_glob) if p.is_file())
        if not images:
            raise DataError(f"no {self.image_glob} images in {image_dir}")
        label_dir = self.label_dir(root, split)
        return [Item(p.stem, p, label_dir / f"{p.stem}{self.label_suffix}") for p in images]


class CocoLayout(FolderLayout):
    def image_dir(self, root: Path, split: str) -> Path:
        return root / "images" / f"{split}2017"

    def label_dir(self, root: Path, split: str) -> Path:
        return root / "annotations" / f"{split}2017"


@register_layout("coco_object")
class CocoObjectLayout(CocoLayout):
    label_suffix = "_instanceTrainIds.png"


@register_layout("coco_stuff")
class CocoStuffLayout(CocoLayout):
    label_suffix = "_labelTrainIds.png"


@register_layout("ade20k")
class Ade20kLayout(FolderLayout):
    split_folders = {"val": "validation", "train": "training"}

    def split_folder(self, split: str) -> str:
        return self.split_folders.get(split, split)

    def image_dir(self, root: Path, split: str) -> Path:
        return root / "images" / self.split_folder(split)

    def label_dir(self, root: Path, split: str) -> Path:
        return root / "annotations" / self.split_folder(split)


@register_layout("cityscapes")
class CityscapesLayout(DatasetLayout):
    image_suffix = "_leftImg8bit.png"
    label_suffix = "_gtFine_labelTrainIds.png"

    def describe(self, split: str) -> str:
        return f"leftImg8bit/{split}/<city>/<x>{self.image_suffix}, gtFine/{split}/<city>/<x>{self.label_suffix}"

    def list_items(self, root: Path, split: str) -> List[Item]:
        image_dir = root / "leftImg8bit" / split
        _require_dir(image_dir, "image")
        images = sorted(
            (p for p in image_dir.glob(f"*/*{self.image_suffix}") if p.is_file()),
            key=lambda p: (p.name, p.parent.name),
        )
        if not images:
            raise DataError(f"no <city>/*{self.image_suffix} images in {image_dir}")
        label_dir = root / "gtFine" / split
        items = []
        for p in images:
            base = p.name[: -len(self.image_suffix)]
            items.append(Item(p.stem, p, label_dir / p.parent.name / f"{base}{self.label_suffix}"))
        return items
