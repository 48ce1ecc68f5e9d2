"""Which images did run B improve or worsen against run A, and what do they look like?

`image_differences` scores every image of one dataset for both runs from their per-image counts
(`per_image/<dataset>.npz`): an image's IoU is the mean, over the classes its ground truth holds, of that
image's intersection / union, in percent. This per-image score only ranks images; it is not the dataset's
mIoU, which sums counts over images first. `top_and_bottom` keeps the k largest gains and losses.

`gallery_panels` draws, per chosen image, the image, its ground truth and both runs' predictions as RGB
arrays coloured with the VOC palette; `gallery_figure` lays them out in a grid with a legend of the classes
shown. Predictions are read from `predictions/<dataset>/<image>.png` when a run saved them
(`save_predictions=true`); otherwise they are regenerated with `sfp.Segmenter` from the run's recorded
config, for the shown images only. Images and ground truths are read from the dataset the recorded config
describes, so its files must be on this machine.

Ignored pixels (label 255) are drawn in the neutral grey IGNORE_COLOUR = (80, 80, 80), not black: black is
VOC's background colour, and no class index below 512 has this grey.

Command line (wired in `analysis/cli.py`): `python -m analysis images --runs A B [--k 4] [--out FILE]`.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import pandas as pd

from sfp.errors import ConfigError, DataError, SFPError
from sfp.tracking.per_image import PerImageAreas, load_for_record

from .intervals import read_run, same_images

PathLike = Union[str, Path]
IGNORE_INDEX = 255  # the label value every loader writes for unlabelled pixels (sfp.data.sample)
IGNORE_COLOUR = (80, 80, 80)
DEFAULT_K = 4
COLUMNS = ("image", "iou_a", "iou_b", "delta", "classes")


# --------------------------------------------------------------------------- per-image differences


def per_image_iou(table: PerImageAreas) -> Tuple[np.ndarray, np.ndarray]:
    """Per image, (IoU in percent, number of classes present): the mean over the classes its ground truth
    holds (labelled > 0) of intersection / union; NaN and 0 for an image without any labelled class."""
    intersection = table.area("intersection").astype(np.float64)
    union = table.area("union").astype(np.float64)
    present = table.area("labelled") > 0  # union >= labelled, so no division by zero below
    ratio = np.divide(intersection, union, out=np.zeros_like(intersection), where=present)
    classes = present.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(classes > 0, ratio.sum(axis=1) / np.maximum(classes, 1), np.nan) * 100.0
    return iou, classes


def _tables(run_a: PathLike, run_b: PathLike, dataset: str) -> Tuple[PerImageAreas, PerImageAreas]:
    folder_a, record_a = read_run(Path(run_a))
    folder_b, record_b = read_run(Path(run_b))
    a = load_for_record(folder_a, record_a, dataset)
    b = load_for_record(folder_b, record_b, dataset)
    return a, same_images(a, b, f"run A ({folder_a})", f"run B ({folder_b})")


def image_differences(run_a: PathLike, run_b: PathLike, dataset: str) -> pd.DataFrame:
    """One row per image of `dataset` with a labelled class: image, iou_a, iou_b, delta (= iou_b - iou_a,
    percentage points) and classes (classes in its ground truth), sorted by delta, largest first (ties in
    evaluation order). Runs are folders or results.json paths; PerImageError when they were not evaluated on
    the same images."""
    a, b = _tables(run_a, run_b, dataset)
    iou_a, classes = per_image_iou(a)
    iou_b, _ = per_image_iou(b)
    frame = pd.DataFrame({"image": a.names, "iou_a": iou_a, "iou_b": iou_b, "delta": iou_b - iou_a,
                          "classes": classes.astype(np.int64)})
    # an image without a labelled class has no score (the metric ignores all of its pixels)
    frame = frame[frame["classes"] > 0]
    return frame.sort_values("delta", ascending=False, kind="stable").reset_index(drop=True)


def top_and_bottom(differences: pd.DataFrame, k: int) -> Tuple[pd.DataFrame, pd.DataFrame]:
    """(gains, losses): the k rows of largest delta, largest first, and the k rows of smallest delta, worst
    first. With fewer than 2k images the gains are filled first and the losses get the rest, so no image is
    in both (the lists rank deltas: a "gain" may be negative when B loses on most images)."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    ranked = differences.sort_values("delta", ascending=False, kind="stable").reset_index(drop=True)
    gains = ranked.iloc[:k]
    rest = ranked.iloc[len(gains):]
    losses = rest.iloc[::-1].iloc[:k]
    return gains.reset_index(drop=True), losses.reset_index(drop=True)


# --------------------------------------------------------------------------- colours


def class_palette(size: int = 256) -> np.ndarray:
    """(size, 3) uint8 colours: VOC's bit-interleaved colour map (`sfp.data.palette.voc_palette` for the first
    256 indices), continued for larger indices by the same rule so 16-bit label maps colour too."""
    index = np.arange(max(int(size), 256), dtype=np.int64)
    colours = np.zeros((len(index), 3), dtype=np.int64)
    c = index.copy()
    for bit in range(8):
        for channel in range(3):
            colours[:, channel] |= ((c >> channel) & 1) << (7 - bit)
        c >>= 3
    return colours.astype(np.uint8)


def colourise(labels: np.ndarray, palette: Optional[np.ndarray] = None) -> np.ndarray:
    """(H, W) class indices -> (H, W, 3) uint8 RGB: palette[label], IGNORE_COLOUR where label is 255."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"expected an (H, W) label map, got shape {labels.shape}")
    if labels.size and labels.min() < 0:
        raise ValueError(f"label map holds negative class indices ({labels.min()})")
    top = int(labels.max(initial=0))
    if palette is None or len(palette) <= top:
        palette = class_palette(top + 1)
    rgb = palette[labels.astype(np.int64)]
    rgb[labels == IGNORE_INDEX] = IGNORE_COLOUR
    return rgb


# --------------------------------------------------------------------------- panels


@dataclass(eq=False)  # arrays have no single truth value to compare
class GalleryRow:
    """One image of the gallery: the four RGB panels (image, ground truth, A's and B's predictions), the
    label maps they were coloured from, and where each prediction came from ("saved" or "regenerated").
    Unpacks as its four panels: `image, truth, a, b = row`."""

    name: str
    image: np.ndarray
    ground_truth: np.ndarray
    prediction_a: np.ndarray
    prediction_b: np.ndarray
    labels: Tuple[np.ndarray, np.ndarray, np.ndarray]  # ground truth, A, B as (H, W) int64 class indices
    sources: Tuple[str, str]

    @property
    def panels(self) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        return self.image, self.ground_truth, self.prediction_a, self.prediction_b

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter(self.panels)


def prediction_path(run_dir: PathLike, dataset: str, name: str) -> Path:
    """Where a run with save_predictions=true keeps an image's prediction."""
    return Path(run_dir) / "predictions" / dataset / f"{name}.png"


def read_prediction(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return np.array(image).astype(np.int64)
    except FileNotFoundError:
        raise
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise DataError(f"cannot read the saved prediction {path}: {exc}") from None


def run_config_from_record(record: Mapping[str, Any], device: Optional[str] = None):
    """The typed `RunConfig` of a record's resolved config, optionally on another inference device."""
    from sfp.assembly import from_resolved

    run = from_resolved(record["config"])
    if device is not None:
        run.inference = replace(run.inference, device=device)
    return run


class _Datasets:
    """Datasets built from recorded dataset configs, once per distinct config (two runs usually share one)."""

    def __init__(self) -> None:
        self._built: Dict[str, Any] = {}

    def get(self, record: Mapping[str, Any], folder: Path, dataset: str):
        from omegaconf import OmegaConf

        from sfp.config.schema import DatasetConfig
        from sfp.data import build_dataset

        node = (record.get("config", {}).get("datasets") or {}).get(dataset)
        if node is None:
            raise ConfigError(f"run {folder}: its recorded config has no dataset {dataset!r}")
        key = json.dumps(node, sort_keys=True, default=str)
        if key not in self._built:
            try:
                typed = OmegaConf.merge(OmegaConf.structured(DatasetConfig), node)
                self._built[key] = build_dataset(typed, key=dataset)
            except SFPError as exc:
                raise DataError(f"run {folder}: cannot read the images of dataset {dataset!r} its recorded "
                                f"config describes: {exc}") from None
        return self._built[key]

    @staticmethod
    def samples(data, names: Sequence[str], folder: Path) -> Dict[str, Any]:
        position = {name: i for i, name in enumerate(data.names)}
        missing = [name for name in names if name not in position]
        if missing:
            raise DataError(f"run {folder}: dataset {data.key!r} at {data.root} has no image named "
                            f"{missing[0]!r}" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
        return {name: data[position[name]] for name in dict.fromkeys(names)}


def _predictions(folder: Path, record: Mapping[str, Any], dataset: str, names: Sequence[str],
                 regenerate: Union[str, bool], datasets: _Datasets, device: Optional[str],
                 what: str) -> Tuple[Dict[str, np.ndarray], str]:
    """One run's predictions of `names`, and "saved" or "regenerated"."""
    paths = {name: prediction_path(folder, dataset, name) for name in names}
    missing = [path for path in paths.values() if not path.is_file()]
    if regenerate is False and missing:
        raise DataError(f"{what} ({folder}) saved no prediction for {missing[0].stem!r}: {missing[0]} is "
                        "missing (evaluate it with save_predictions=true, or allow regeneration)")
    if regenerate is not True and not missing:
        return {name: read_prediction(path) for name, path in paths.items()}, "saved"
    # regenerated from the run's own config and dataset, one model for all the shown images
    from sfp.segmenter import Segmenter

    samples = datasets.samples(datasets.get(record, folder, dataset), names, folder)
    segmenter = Segmenter(run_config_from_record(record, device), dataset=dataset)
    return {name: segmenter.predict(sample.image) for name, sample in samples.items()}, "regenerated"


def gallery_panels(run_a: PathLike, run_b: PathLike, dataset: str, names: Sequence[str],
                   regenerate: Union[str, bool] = "auto", device: Optional[str] = None) -> List[GalleryRow]:
    """Per image name, a GalleryRow of four RGB uint8 panels: the image, its ground truth, A's and B's
    predictions (label maps coloured with `class_palette`, ignored pixels IGNORE_COLOUR).

    Image and ground truth come from the dataset run A's recorded config describes. A run's predictions
    are its saved `predictions/<dataset>/<name>.png` files; regenerate="auto" regenerates them with
    `sfp.Segmenter` from the run's recorded config when any is missing, True always regenerates, False raises
    DataError naming the missing file. `device` replaces the recorded inference device when regenerating."""
    if not (isinstance(regenerate, bool) or regenerate == "auto"):
        raise ValueError(f"regenerate must be 'auto', True or False, got {regenerate!r}")
    names = list(names)
    folder_a, record_a = read_run(Path(run_a))
    folder_b, record_b = read_run(Path(run_b))
    datasets = _Datasets()
    samples = datasets.samples(datasets.get(record_a, folder_a, dataset), names, folder_a)
    num_classes = datasets.get(record_a, folder_a, dataset).num_classes
    predicted = [_predictions(folder, record, dataset, names, regenerate, datasets, device, what)
                 for folder, record, what in ((folder_a, record_a, "run A"), (folder_b, record_b, "run B"))]
    palette = class_palette(num_classes)
    rows = []
    for name in names:
        sample = samples[name]
        labels = [np.asarray(sample.label, dtype=np.int64)]
        for (maps, _), folder in zip(predicted, (folder_a, folder_b)):
            if maps[name].shape != sample.label.shape:
                raise DataError(f"run {folder}: the prediction of {name!r} is {maps[name].shape[::-1]} (WxH) but "
                                f"its ground truth is {sample.label.shape[::-1]}")
            labels.append(np.asarray(maps[name], dtype=np.int64))
        truth, a, b = (colourise(label, palette) for label in labels)
        rows.append(GalleryRow(name, np.asarray(sample.image, dtype=np.uint8), truth, a, b, tuple(labels),
                               (predicted[0][1], predicted[1][1])))
    return rows


# --------------------------------------------------------------------------- figure


def gallery_figure(rows: Sequence[GalleryRow], titles: Sequence[str], class_names: Sequence[str],
                   deltas: Union[Sequence[float], Mapping[str, float]]):
    """A matplotlib Figure: one row per GalleryRow (labelled with its image name and delta), columns image,
    ground truth, titles[0] (run A) and titles[1] (run B), each panel shown pixel for pixel
    (interpolation="nearest"), and a legend of the classes in the shown ground truths and predictions.
    `deltas`: per row in order, or by image name."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    rows = list(rows)
    if not rows:
        raise ValueError("no images to show")
    if len(titles) != 2:
        raise ValueError(f"titles: one per run (A, B), got {len(titles)}")
    values = [deltas[row.name] for row in rows] if isinstance(deltas, Mapping) else list(deltas)
    if len(values) != len(rows):
        raise ValueError(f"{len(values)} deltas for {len(rows)} images")
    height, width = rows[0].image.shape[:2]
    panel_w = 2.4
    panel_h = min(max(panel_w * height / max(width, 1), 0.8), 4.0)
    figure = Figure(figsize=(4 * panel_w + 0.8, len(rows) * panel_h + 1.2), layout="constrained")
    grid = figure.subplots(len(rows), 4, squeeze=False)
    headers = ("image", "ground truth", str(titles[0]), str(titles[1]))
    for r, (row, delta) in enumerate(zip(rows, values)):
        for c, panel in enumerate(row.panels):
            axes = grid[r, c]
            axes.imshow(panel, interpolation="nearest")
            # ticks and frame off but the axes kept, so the first column's y label can name the row
            axes.set_xticks([])
            axes.set_yticks([])
            for spine in axes.spines.values():
                spine.set_visible(False)
            if r == 0:
                axes.set_title(headers[c], fontsize="small")
        grid[r, 0].set_ylabel(f"{row.name}\nΔ {delta:+.2f}", fontsize="small")
    shown = sorted({int(v) for row in rows for label in row.labels for v in np.unique(label)})
    palette = class_palette(max(shown, default=0) + 1)
    handles = []
    for index in shown:
        if index == IGNORE_INDEX:
            continue
        name = class_names[index] if index < len(class_names) else f"class {index}"
        handles.append(Patch(facecolor=palette[index] / 255.0, edgecolor="black", linewidth=0.5, label=name))
    if IGNORE_INDEX in shown:
        handles.append(Patch(facecolor=np.array(IGNORE_COLOUR) / 255.0, edgecolor="black", linewidth=0.5,
                             label="ignored"))
    if handles:
        figure.legend(handles=handles, loc="outside lower center", ncols=min(6, len(handles)), fontsize="small")
    return figure


# --------------------------------------------------------------------------- command line


def add_images_parser(commands) -> argparse.ArgumentParser:
    """Adds `images` to an argparse subparsers object and returns its parser."""
    images = commands.add_parser("images", help="the images run B improved or worsened most against run A",
                                 description="Per-image IoU of two runs on one dataset: the k largest gains and "
                                             "losses of B against A, optionally as a figure.")
    images.add_argument("--runs", nargs=2, type=Path, required=True, metavar=("A", "B"),
                        help="two run folders (or their results.json)")
    images.add_argument("--dataset", help="dataset key (default: the first dataset both runs evaluated)")
    images.add_argument("--k", type=int, default=DEFAULT_K, help=f"images per list (default {DEFAULT_K})")
    images.add_argument("--out", type=Path, metavar="FILE",
                        help="write the gallery figure as FILE.png and FILE.pdf (a .png/.pdf suffix is dropped)")
    images.add_argument("--no-regenerate", action="store_true",
                        help="use only saved predictions; fail when a run did not save them")
    images.add_argument("--device", help="device for regenerated predictions (default: the recorded one)")
    return images


def common_dataset(record_a: Mapping[str, Any], record_b: Mapping[str, Any]) -> str:
    """The first dataset (in A's order) that both runs evaluated."""
    evaluated_b = set(record_b.get("metrics") or {})
    for dataset in record_a.get("metrics") or {}:
        if dataset in evaluated_b:
            return dataset
    raise SFPError(f"the runs evaluated no dataset in common (A: {', '.join(record_a.get('metrics') or {})}; "
                   f"B: {', '.join(evaluated_b)})")


def run_label(folder: Path, record: Mapping[str, Any], other: Mapping[str, Any]) -> str:
    """A run's folder name and, one per line, up to two settings that tell it apart from the other run: the
    Hydra choices that differ, then the method's name, then other resolved settings."""
    from sfp.tracking.resume import differing_keys

    from .variants import is_ignored

    def value(config: Mapping[str, Any], key: str) -> Any:
        node: Any = config
        for part in key.split("."):
            node = node.get(part) if isinstance(node, Mapping) else None
        return node

    choices, other_choices = record.get("choices") or {}, other.get("choices") or {}
    parts = [f"{group}={choices[group]}" for group in choices if choices[group] != other_choices.get(group)]
    if not parts:
        config, other_config = record.get("config") or {}, other.get("config") or {}
        keys = [k for k in differing_keys(config, other_config)
                if not is_ignored(k) and not (k.startswith("datasets.") and k.endswith(".root"))]
        keys.sort(key=lambda k: k != "method.name")  # the method first: it usually explains the rest
        parts = [f"{k}={value(config, k)}" for k in keys]
    shown = parts[:2] + ([f"(+{len(parts) - 2} more)"] if len(parts) > 2 else [])
    return "\n".join([folder.name, *shown])


def format_list(title: str, frame: pd.DataFrame) -> str:
    lines = [title, f"  {'image':<24}{'IoU A':>8}{'IoU B':>8}{'Δ':>8}"]
    for row in frame.itertuples(index=False):
        lines.append(f"  {row.image:<24}{row.iou_a:>8.2f}{row.iou_b:>8.2f}{row.delta:>+8.2f}")
    if frame.empty:
        lines.append("  (none)")
    return "\n".join(lines)


def _figure_stem(out: Path) -> Path:
    return out.with_suffix("") if out.suffix.lower() in (".png", ".pdf") else out


def gallery(run_a: PathLike, run_b: PathLike, dataset: Optional[str] = None, k: int = DEFAULT_K,
            regenerate: Union[str, bool] = "auto", device: Optional[str] = None):
    """The whole comparison in one call (the command line and the notebooks use it): returns the dataset,
    the per-image differences, the k largest gains and losses, and the gallery figure of those images."""
    folder_a, record_a = read_run(Path(run_a))
    folder_b, record_b = read_run(Path(run_b))
    dataset = dataset or common_dataset(record_a, record_b)
    differences = image_differences(folder_a, folder_b, dataset)
    gains, losses = top_and_bottom(differences, k)
    shown = pd.concat([gains, losses], ignore_index=True)
    if shown.empty:
        raise SFPError(f"dataset {dataset}: no image with a labelled class to show")
    rows = gallery_panels(folder_a, folder_b, dataset, list(shown["image"]), regenerate=regenerate, device=device)
    class_names = load_for_record(folder_a, record_a, dataset).class_names
    titles = (f"A: {run_label(folder_a, record_a, record_b)}", f"B: {run_label(folder_b, record_b, record_a)}")
    return dataset, differences, gains, losses, gallery_figure(rows, titles, class_names, list(shown["delta"]))


def run_images(args: argparse.Namespace) -> int:
    """The `images` command: prints the top and bottom k images, writes the figure with --out."""
    try:
        run_a, run_b = args.runs
        folder_a, record_a = read_run(Path(run_a))
        folder_b, record_b = read_run(Path(run_b))
        dataset = args.dataset or common_dataset(record_a, record_b)
        if args.out is not None:
            dataset, differences, gains, losses, figure = gallery(
                folder_a, folder_b, dataset, args.k, regenerate=False if args.no_regenerate else "auto",
                device=getattr(args, "device", None))
        else:
            differences = image_differences(folder_a, folder_b, dataset)
            gains, losses = top_and_bottom(differences, args.k)
        print(f"dataset {dataset}: {len(differences)} images; per-image IoU (%), Δ = B - A")
        print(f"A: {folder_a}\nB: {folder_b}")
        print(format_list(f"largest gains of B ({len(gains)}):", gains))
        print(format_list(f"largest losses of B ({len(losses)}):", losses))
        if args.out is not None:
            from .plots import save_figure

            for path in save_figure(figure, _figure_stem(Path(args.out))):
                print(path)
        return 0
    except (SFPError, ValueError, KeyError, FileNotFoundError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"error: {message}", file=sys.stderr)
        return 2


__all__ = [
    "gallery", "image_differences", "top_and_bottom", "gallery_panels", "gallery_figure", "GalleryRow", "class_palette",
    "colourise", "per_image_iou", "run_config_from_record", "add_images_parser", "run_images", "IGNORE_COLOUR",
]
