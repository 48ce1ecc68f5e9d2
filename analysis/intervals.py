"""Is a difference real? Paired bootstrap confidence intervals of mIoU and of mIoU differences.

The sampling unit is the image: a resample draws N of a dataset's N images with replacement, sums their
per-class intersections and unions (`per_image/<dataset>.npz` of each run) and recomputes mIoU from those sums
exactly as the metric does (never an average of per-image IoUs); a class whose resampled union is empty is
left out of that resample's mean, as the metric leaves out classes absent from a split. Two runs are paired:
both use the same resample, so what the images have in common cancels in their difference. The interval is the
percentile interval of the resampled values. Resamples come from a seed and the dataset's name, so a table and
`python -m analysis compare` give the same interval for the same pair. An average over datasets resamples each
dataset independently and averages the resampled values.

Assumptions: the images are an independent sample of the images the benchmark stands for; the runs are
deterministic given their images (the variation measured is that of the image sample, not of run-to-run
noise, which this evaluation does not have).
"""
from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from sfp.errors import SFPError
from sfp.tracking.per_image import PerImageAreas, PerImageError, load_for_record
from sfp.tracking.results_store import RESULTS_FILENAME, ResultsError, read_results

DEFAULT_RESAMPLES = 1000
DEFAULT_LEVEL = 0.95
DEFAULT_SEED = 0
_CHUNK = 256  # resamples per matrix product (bounds memory on large datasets)


@dataclass(frozen=True)
class BootstrapSettings:
    resamples: int = DEFAULT_RESAMPLES
    level: float = DEFAULT_LEVEL
    seed: int = DEFAULT_SEED

    def __post_init__(self) -> None:
        if isinstance(self.resamples, bool) or not isinstance(self.resamples, int) or self.resamples < 1:
            raise ValueError(f"resamples must be a positive integer, got {self.resamples!r}")
        if not (isinstance(self.level, (int, float)) and 0 < self.level < 1):
            raise ValueError(f"level must lie strictly between 0 and 1 (e.g. 0.95), got {self.level!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")


def miou_from_sums(intersection: np.ndarray, union: np.ndarray) -> np.ndarray:
    """mIoU (percent) per row of summed (..., C) intersections and unions; classes with an empty union are left
    out (NaN when every class is)."""
    intersection, union = np.asarray(intersection, np.float64), np.asarray(union, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, intersection / union, np.nan)
    valid = ~np.isnan(iou)
    count = valid.sum(axis=-1)
    total = np.where(valid, iou, 0.0).sum(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan) * 100.0


def point_miou(table: PerImageAreas) -> float:
    """The dataset's mIoU from the summed counts, as the metric computes it (same operations, same value)."""
    inter, union = table.total()[0].astype(np.float64), table.total()[1].astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, inter / union, np.nan)
    valid = iou[~np.isnan(iou)]
    return float(valid.mean()) * 100.0 if valid.size else math.nan


def _weights(n: int, settings: BootstrapSettings, dataset: str) -> Iterator[np.ndarray]:
    """Chunks of (r, n) resample counts: how often each image is drawn in each resample."""
    rng = np.random.default_rng([settings.seed, zlib.crc32(dataset.encode())])
    done = 0
    while done < settings.resamples:
        r = min(_CHUNK, settings.resamples - done)
        yield rng.multinomial(n, np.full(n, 1.0 / n), size=r).astype(np.float64)
        done += r


def resampled_mious(groups: Sequence[Sequence[PerImageAreas]], dataset: str,
                    settings: BootstrapSettings) -> List[np.ndarray]:
    """Per group (the runs of one table row, images in one order), its (resamples,) mIoU averaged over its runs;
    every group sees the same resamples (paired)."""
    n = groups[0][0].num_images
    if n == 0:
        raise SFPError(f"dataset {dataset!r}: no images to resample")
    stacked = [[(t.area("intersection").astype(np.float64), t.area("union").astype(np.float64)) for t in runs]
               for runs in groups]
    out: List[List[np.ndarray]] = [[] for _ in groups]
    for weights in _weights(n, settings, dataset):
        for g, runs in enumerate(stacked):
            out[g].append(np.mean([miou_from_sums(weights @ inter, weights @ union) for inter, union in runs],
                                  axis=0))
    return [np.concatenate(parts) for parts in out]


def percentile_interval(samples: np.ndarray, level: float) -> Tuple[float, float]:
    samples = np.asarray(samples, np.float64)
    if samples.size == 0 or np.isnan(samples).any():
        return math.nan, math.nan
    tail = (1.0 - level) / 2.0
    lo, hi = np.quantile(samples, [tail, 1.0 - tail])
    return float(lo), float(hi)


def excludes_zero(lo: float, hi: float) -> bool:
    return not (math.isnan(lo) or math.isnan(hi)) and (lo > 0 or hi < 0)


# --------------------------------------------------------------------------- runs on disk


def run_directory(path: Path) -> Path:
    """A run folder, or its results.json, as the folder."""
    path = Path(path)
    return path.parent if path.name == RESULTS_FILENAME else path


def read_run(path: Path) -> Tuple[Path, Dict]:
    """(run folder, record) from a run folder or its results.json; SFPError naming what is missing."""
    path = Path(path)
    folder = run_directory(path)
    if not (folder / RESULTS_FILENAME).is_file():
        where = f"{path} holds no {RESULTS_FILENAME}" if path.is_dir() else f"{path} does not exist"
        raise SFPError(f"{where} (give a run folder or its {RESULTS_FILENAME})")
    try:
        return folder, read_results(folder / RESULTS_FILENAME)
    except ResultsError as exc:
        raise SFPError(str(exc)) from None


class PerImageCache:
    """Per-image tables by (run folder, dataset), read once; `why` holds the reason a run has none."""

    def __init__(self) -> None:
        self._tables: Dict[Tuple[str, str], Optional[PerImageAreas]] = {}
        self._records: Dict[str, Tuple[Path, Dict]] = {}
        self.why: Dict[Tuple[str, str], str] = {}

    def get(self, run_dir: str, dataset: str) -> Optional[PerImageAreas]:
        key = (str(run_dir), dataset)
        if key not in self._tables:
            try:
                if key[0] not in self._records:
                    self._records[key[0]] = read_run(Path(run_dir))
                folder, record = self._records[key[0]]
                self._tables[key] = load_for_record(folder, record, dataset)
            except (SFPError, OSError) as exc:
                self._tables[key] = None
                self.why[key] = str(exc)
        return self._tables[key]


def same_images(a: PerImageAreas, b: PerImageAreas, what_a: str, what_b: str) -> PerImageAreas:
    """`b` in `a`'s image order; PerImageError naming the difference when the image sets or classes differ."""
    if a.num_classes != b.num_classes:
        raise PerImageError(f"{what_a} has {a.num_classes} classes and {what_b} {b.num_classes}: not the same "
                            "class list")
    names_a, names_b = set(a.names), set(b.names)
    if names_a != names_b:
        only_a, only_b = sorted(names_a - names_b), sorted(names_b - names_a)
        parts = []
        if only_a:
            parts.append(f"{len(only_a)} image(s) only in {what_a} (e.g. {', '.join(only_a[:3])})")
        if only_b:
            parts.append(f"{len(only_b)} image(s) only in {what_b} (e.g. {', '.join(only_b[:3])})")
        raise PerImageError(f"not evaluated on the same images: {'; '.join(parts)}")
    return b if b.names == a.names else b.select(a.names)


@dataclass
class Comparison:
    """Run B against run A on one dataset; mIoU and intervals in percent, delta = B - A."""

    dataset: str
    miou_a: float
    miou_b: float
    delta: float
    lo: float
    hi: float
    miou_a_lo: float
    miou_a_hi: float
    miou_b_lo: float
    miou_b_hi: float
    n_images: int
    settings: BootstrapSettings

    @property
    def significant(self) -> bool:
        return excludes_zero(self.lo, self.hi)

    def as_json(self) -> Dict[str, object]:
        return {"dataset": self.dataset, "miou_a": self.miou_a, "miou_b": self.miou_b, "delta": self.delta,
                "lo": self.lo, "hi": self.hi, "level": self.settings.level, "resamples": self.settings.resamples,
                "n_images": self.n_images, "seed": self.settings.seed, "miou_a_lo": self.miou_a_lo,
                "miou_a_hi": self.miou_a_hi, "miou_b_lo": self.miou_b_lo, "miou_b_hi": self.miou_b_hi,
                "excludes_zero": self.significant}


def compare_tables(a: PerImageAreas, b: PerImageAreas, dataset: str, settings: BootstrapSettings = BootstrapSettings(),
                   what_a: str = "run A", what_b: str = "run B") -> Comparison:
    """The paired bootstrap of B - A on one dataset's per-image counts."""
    b = same_images(a, b, what_a, what_b)
    samples_a, samples_b = resampled_mious([[a], [b]], dataset, settings)
    miou_a, miou_b = point_miou(a), point_miou(b)
    return Comparison(dataset, miou_a, miou_b, miou_b - miou_a,
                      *percentile_interval(samples_b - samples_a, settings.level),
                      *percentile_interval(samples_a, settings.level),
                      *percentile_interval(samples_b, settings.level), a.num_images, settings)


def compare_runs(run_a: Path, run_b: Path, datasets: Optional[Sequence[str]] = None,
                 settings: BootstrapSettings = BootstrapSettings()) -> List[Comparison]:
    """Every dataset both runs evaluated (or `datasets`), B - A; SFPError naming what does not match."""
    folder_a, record_a = read_run(run_a)
    folder_b, record_b = read_run(run_b)
    shared = [d for d in record_a["metrics"] if d in record_b["metrics"]]
    if datasets:
        for dataset in datasets:
            for folder, record in ((folder_a, record_a), (folder_b, record_b)):
                if dataset not in record["metrics"]:
                    raise SFPError(f"{folder} did not evaluate {dataset!r} (it evaluated "
                                   f"{', '.join(record['metrics']) or 'nothing'})")
        shared = list(datasets)
    if not shared:
        raise SFPError(f"{folder_a} and {folder_b} have no dataset in common ({', '.join(record_a['metrics'])} vs "
                       f"{', '.join(record_b['metrics'])})")
    out = []
    for dataset in shared:
        class_a, class_b = record_a.get("class_files", {}).get(dataset), record_b.get("class_files", {}).get(dataset)
        if class_a and class_b and class_a != class_b:
            raise SFPError(f"{dataset}: the runs used different class files (sha256 {class_a[:12]}... in {folder_a}, "
                           f"{class_b[:12]}... in {folder_b}); their mIoUs are not comparable")
        a = load_for_record(folder_a, record_a, dataset)
        b = load_for_record(folder_b, record_b, dataset)
        out.append(compare_tables(a, b, dataset, settings, f"{folder_a} ({dataset})", f"{folder_b} ({dataset})"))
    return out


# --------------------------------------------------------------------------- table rows

AVERAGE_KEY = "avg"


def paired_row_intervals(row_runs: Dict[object, Dict[str, List[str]]], pairs: Sequence[Tuple[object, object]],
                         datasets: Sequence[str], settings: BootstrapSettings,
                         cache: Optional[PerImageCache] = None) -> Tuple[Dict[object, Dict[str, Tuple[float, float]]],
                                                                         List[str]]:
    """Intervals of (row - reference) per dataset and for the average over `datasets`, for each (row, reference)
    pair. row_runs: row -> dataset -> the run folders averaged into that cell. A row's runs, and its reference's,
    must have been evaluated on the same images; where they were not, or a run has no per-image record, the
    pair gets no interval and a note says why."""
    cache = cache or PerImageCache()
    samples: Dict[Tuple[object, str], np.ndarray] = {}
    problems: List[str] = []
    for dataset in datasets:
        by_reference: Dict[object, List[object]] = {}
        for row, reference in pairs:
            by_reference.setdefault(reference, []).append(row)
        for reference, rows in by_reference.items():
            base = _tables(row_runs, reference, dataset, cache, problems)
            if base is None:
                continue
            groups, kept = [base], []
            for row in rows:
                tables = _tables(row_runs, row, dataset, cache, problems)
                if tables is None:
                    continue
                try:
                    groups.append([same_images(base[0], t, f"the reference row ({dataset})", f"row {row} ({dataset})")
                                   for t in tables])
                    kept.append(row)
                except PerImageError as exc:
                    problems.append(f"{_row_text(row)} vs {_row_text(reference)}, {dataset}: {exc}")
            if not kept:
                continue
            resampled = resampled_mious(groups, dataset, settings)
            for row, values in zip(kept, resampled[1:]):
                samples[(row, dataset)] = values - resampled[0]
    out: Dict[object, Dict[str, Tuple[float, float]]] = {}
    for row, _ in pairs:
        cells = {d: percentile_interval(samples[(row, d)], settings.level) for d in datasets if (row, d) in samples}
        if datasets and all((row, d) in samples for d in datasets):
            average = np.mean([samples[(row, d)] for d in datasets], axis=0)
            cells[AVERAGE_KEY] = percentile_interval(average, settings.level)
        out[row] = cells
    return out, list(dict.fromkeys(problems))


def _tables(row_runs, row, dataset: str, cache: PerImageCache, problems: List[str]) -> Optional[List[PerImageAreas]]:
    folders = row_runs.get(row, {}).get(dataset, [])
    if not folders:
        return None
    tables = []
    for folder in folders:
        table = cache.get(folder, dataset)
        if table is None:
            problems.append(cache.why.get((str(folder), dataset), f"{folder}: no per-image record for {dataset}"))
            return None
        tables.append(table)
    first = tables[0]
    try:
        return [first] + [same_images(first, t, f"{folders[0]}", f"{folder}") for t, folder in zip(tables[1:],
                                                                                                 folders[1:])]
    except PerImageError as exc:
        problems.append(f"{_row_text(row)}, {dataset}: its runs {exc}")
        return None


def _row_text(row: object) -> str:
    parts = [str(p) for p in (row if isinstance(row, tuple) else (row,)) if str(p)]
    return "/".join(parts) or "row"


def interval_notes(settings: BootstrapSettings, problems: Sequence[str], extra: str = "") -> List[str]:
    """The notes under a table with intervals: the method, and the pairs that got none and why."""
    notes = [f"[lo, hi]: {settings.level:.0%} paired bootstrap interval of the difference over images "
             f"({settings.resamples} resamples, seed {settings.seed}; mIoU recomputed from resampled summed "
             "intersections and unions); * the interval excludes zero." + extra]
    if problems:
        notes.append(f"no interval where per-image records are missing or differ: {'; '.join(problems[:3])}"
                     + (f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""))
    return notes
