"""Per-image records: each image's per-class pixel counts, one `.npz` file per dataset beside `results.json`.

Summing the images' counts gives the job's `areas` exactly (integers), so any statistic over images (a
bootstrap interval, the images that gained most) is computed from the same numbers as the metric.

File layout (`per_image/<dataset>.npz`, written atomically), sparse because most classes are absent from
most images:

- `names` (N,): the image names (file stems), unique, in evaluation order;
- `offsets` (N + 1,): image i's entries are `offsets[i]:offsets[i + 1]` of the arrays below;
- `classes`, `intersection`, `union`, `predicted`, `labelled` (K,): per entry, a class index and its counts
  (an entry exists where the predicted or the labelled area is not zero);
- `pixels` (N,): labelled (non-ignored) pixels per image;
- `class_names` (C,), `num_classes`, `format`.
"""
from __future__ import annotations

import hashlib
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import numpy as np

from ..errors import SFPError
from .results_store import write_file_atomic

AREA_NAMES = ("intersection", "union", "predicted", "labelled")  # rows of IoUAccumulator.state_tensor()
FORMAT = 1
FOLDER = "per_image"
PathLike = Union[str, "os.PathLike[str]"]


class PerImageError(SFPError, ValueError):
    """A per-image file is missing, unreadable, or does not match its results record."""


@dataclass
class PerImageAreas:
    """One dataset's per-image counts. areas: (N, 4, C) int64, rows as AREA_NAMES; pixels: (N,) int64."""

    names: List[str]
    areas: np.ndarray
    pixels: np.ndarray
    class_names: List[str]

    def __post_init__(self) -> None:
        self.areas = np.asarray(self.areas, dtype=np.int64).reshape(len(self.names), len(AREA_NAMES), -1)
        self.pixels = np.asarray(self.pixels, dtype=np.int64).reshape(len(self.names))
        if len(set(self.names)) != len(self.names):
            counts = Counter(self.names)
            repeated = [name for name, count in counts.items() if count > 1]
            raise PerImageError(f"image names are not unique: {', '.join(repeated[:5])} appear more than once")
        if self.areas.shape[2] != len(self.class_names):
            raise PerImageError(f"{self.areas.shape[2]} classes of counts but {len(self.class_names)} class names")

    @property
    def num_images(self) -> int:
        return len(self.names)

    @property
    def num_classes(self) -> int:
        return int(self.areas.shape[2])

    def area(self, name: str) -> np.ndarray:
        """(N, C) counts of one kind: intersection, union, predicted or labelled."""
        return self.areas[:, AREA_NAMES.index(name), :]

    def total(self) -> np.ndarray:
        """(4, C): the sums over images, equal to the job's `areas` for this dataset."""
        return self.areas.sum(axis=0)

    def images_sha256(self) -> str:
        return images_sha256(self.names)

    def select(self, names: Sequence[str]) -> "PerImageAreas":
        """These images, in this order (every name must be present)."""
        position = {name: i for i, name in enumerate(self.names)}
        missing = [n for n in names if n not in position]
        if missing:
            raise PerImageError(f"{len(missing)} image(s) not in this record, e.g. {', '.join(missing[:3])}")
        index = np.array([position[n] for n in names], dtype=np.int64)
        return PerImageAreas(list(names), self.areas[index], self.pixels[index], list(self.class_names))

    @classmethod
    def concatenate(cls, parts: Sequence["PerImageAreas"]) -> "PerImageAreas":
        """Several shards (e.g. the ranks of a torchrun job) as one table, in the order given."""
        if not parts:
            raise ValueError("nothing to concatenate")
        names = [n for p in parts for n in p.names]
        c = parts[0].num_classes
        return cls(names, np.concatenate([p.areas.reshape(-1, len(AREA_NAMES), c) for p in parts]),
                   np.concatenate([p.pixels for p in parts]), list(parts[0].class_names))


def images_sha256(names: Sequence[str]) -> str:
    """Identity of an image set (order-free): sha256 of the sorted names, one per line."""
    return hashlib.sha256("\n".join(sorted(names)).encode()).hexdigest()


def relative_path(dataset: str) -> str:
    return f"{FOLDER}/{dataset}.npz"


def write_per_image(path: PathLike, table: PerImageAreas) -> str:
    """Write `table` atomically (temporary file, fsync, rename); returns the file's sha256."""
    path = Path(path)
    areas, n = table.areas, table.num_images
    present = (areas[:, AREA_NAMES.index("predicted")] > 0) | (areas[:, AREA_NAMES.index("labelled")] > 0)
    image_index, classes = np.nonzero(present)  # row-major: grouped by image, classes ascending
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(image_index, minlength=n), out=offsets[1:])
    columns = {name: areas[image_index, row, classes] for row, name in enumerate(AREA_NAMES)}
    write_file_atomic(path, lambda handle: np.savez_compressed(
        handle, names=np.array(table.names, dtype=str), offsets=offsets, classes=classes.astype(np.int64),
        pixels=table.pixels, class_names=np.array(table.class_names, dtype=str),
        num_classes=np.int64(table.num_classes), format=np.int64(FORMAT), **columns))
    return file_sha256(path)


def read_per_image(path: PathLike) -> PerImageAreas:
    """Read a per-image file back into dense (N, 4, C) counts; PerImageError names the file on any problem."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except FileNotFoundError:
        raise PerImageError(f"per-image file {path} does not exist") from None
    except (OSError, ValueError) as exc:
        raise PerImageError(f"per-image file {path} is not readable: {exc}") from None
    needed = ("names", "offsets", "classes", "pixels", "class_names", "num_classes", "format", *AREA_NAMES)
    missing = [key for key in needed if key not in arrays]
    if missing:
        raise PerImageError(f"per-image file {path} lacks {', '.join(missing)}")
    if int(arrays["format"]) != FORMAT:
        raise PerImageError(f"per-image file {path} has format {int(arrays['format'])}; this code reads {FORMAT}")
    names = [str(n) for n in arrays["names"]]
    c, offsets, classes = int(arrays["num_classes"]), arrays["offsets"], arrays["classes"]
    if len(offsets) != len(names) + 1 or (len(classes) and (classes.min() < 0 or classes.max() >= c)):
        raise PerImageError(f"per-image file {path} is inconsistent (offsets or class indices out of range)")
    areas = np.zeros((len(names), len(AREA_NAMES), c), dtype=np.int64)
    image_index = np.repeat(np.arange(len(names)), np.diff(offsets))
    for row, name in enumerate(AREA_NAMES):
        areas[image_index, row, classes] = arrays[name]
    return PerImageAreas(names, areas, arrays["pixels"], [str(n) for n in arrays["class_names"]])


def file_sha256(path: PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def record_entry(run_dir: PathLike, dataset: str, table: PerImageAreas) -> Dict[str, object]:
    """Write the dataset's file under `run_dir` and return what the results record says about it."""
    relative = relative_path(dataset)
    sha = write_per_image(Path(run_dir) / relative, table)
    return {"file": relative, "sha256": sha, "n_images": table.num_images, "images_sha256": table.images_sha256()}


def listed_file(run_dir: PathLike, record: Dict, dataset: str, check: bool = True) -> Path:
    """The per-image file a record lists for `dataset`, present and (with `check`) with the listed sha256."""
    entry = (record.get("per_image") or {}).get(dataset)
    if not entry:
        raise PerImageError(f"{Path(run_dir)}: the record has no per-image counts for {dataset!r} (written by a "
                            "version before per-image records, or the dataset was not evaluated); run the job again")
    path = Path(run_dir) / entry.get("file", "")
    if not path.is_file():
        raise PerImageError(f"per-image file {path} listed in {Path(run_dir) / 'results.json'} is missing")
    if check and file_sha256(path) != entry.get("sha256"):
        raise PerImageError(f"per-image file {path} does not match the sha256 its results record lists")
    return path


def load_for_record(run_dir: PathLike, record: Dict, dataset: str, check: bool = True) -> PerImageAreas:
    """The per-image counts a record lists for `dataset`, checked against the file's sha256 and, with
    `check`, against the record's summed areas (so a stale or foreign file is never used)."""
    path = listed_file(run_dir, record, dataset, check)
    table = read_per_image(path)
    areas = (record.get("areas") or {}).get(dataset)
    if check and areas is not None:
        expected = np.array([areas[name] for name in AREA_NAMES], dtype=np.int64)
        if expected.shape != table.total().shape or not np.array_equal(expected, table.total()):
            raise PerImageError(f"per-image file {path}: its sums differ from the record's areas")
    return table


def complete_entries(run_dir: PathLike, record: Dict) -> Optional[str]:
    """None when every evaluated dataset of `record` has its per-image file with the listed sha256, else why not."""
    for dataset in record.get("metrics", {}):
        try:
            listed_file(run_dir, record, dataset)
        except PerImageError as exc:
            return str(exc)
    return None
