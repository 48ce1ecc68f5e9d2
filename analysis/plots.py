"""Figures (matplotlib, saved as PNG and PDF): mIoU against a swept value, per-layer outlier statistics with
one line per configuration, and outlier-position heat maps.

Figures are made with `matplotlib.figure.Figure`, not pyplot, so nothing depends on a GUI backend or global
state; in a notebook a returned figure displays itself.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .names import dataset_label
from .runs import numeric, records_frame
from .tables import AVERAGE, Table
from .variants import describe, settings

CHOICE_ORDER = ("method", "backbone", "mitigator", "enhancer", "integrator", "aggregation")
STAT_TITLES = {
    "candidates": "SOM candidates", "candidates_unscaled": "SOM candidates (no cls_scale)",
    "outliers": "outliers (after top_k)", "norm_ratio": "max / median patch norm",
    "cls_entropy": "CLS attention entropy", "jaccard": "Jaccard with previous layer",
}


def save_figure(figure: Figure, stem: Union[str, Path], dpi: int = 150) -> List[Path]:
    """Writes <stem>.png and <stem>.pdf (without a creation date, so reruns give the same PDF)."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    png, pdf = stem.with_name(stem.name + ".png"), stem.with_name(stem.name + ".pdf")
    figure.savefig(png, dpi=dpi, bbox_inches="tight", metadata={"Software": None})
    figure.savefig(pdf, bbox_inches="tight", metadata={"CreationDate": None, "Creator": None, "Producer": None})
    return [png, pdf]


# --------------------------------------------------------------------------- sweeps


def sweep_plot(table: Table, *, average: bool = True) -> Figure:
    """mIoU against the swept value of a `sweep_table` (or `detector_table`): one line per dataset (and the
    average, dashed), per block and configuration when the table has several. Numeric values are placed
    to scale, others evenly in the table's row order; empty cells are gaps."""
    values = table.values
    level = _swept_level(table)
    xs_raw = list(dict.fromkeys(values.index.get_level_values(level)))
    numeric_axis = all(numeric(v)[0] == 0 and not isinstance(v, bool) for v in xs_raw)
    order = sorted(xs_raw, key=numeric) if numeric_axis else xs_raw  # categories keep the table's order
    position = {v: (float(v) if numeric_axis else i) for i, v in enumerate(order)}
    others = [n for n in values.index.names if n != level]

    figure = Figure(figsize=(6.4, 4.0), layout="constrained")
    axes = figure.add_subplot()
    series = [(d, dataset_label(d), "-") for d in table.datasets]
    if average and len(table.datasets) > 1:
        series.append((AVERAGE, "Avg", "--"))
    lines = values.groupby(level=others, sort=False) if others else [((), values)]
    for key, part in lines:
        prefix = ", ".join(str(k) for k in (key if isinstance(key, tuple) else (key,)) if str(k))
        part = part.droplevel(others) if others else part.droplevel([n for n in part.index.names if n != level])
        part = part.loc[[v for v in order if v in part.index]]
        x = [position[v] for v in part.index]
        for column, label, style in series:
            axes.plot(x, part[column].to_numpy(dtype=float), style, marker="o",
                      label=f"{prefix}: {label}" if prefix else label)
    if not numeric_axis:
        axes.set_xticks(range(len(order)), [str(v) for v in order])
    axes.set_xlabel(level)
    axes.set_ylabel("mIoU (%)")
    axes.set_title(table.title)
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    return figure


def _swept_level(table: Table) -> str:
    fixed = {"Backbone", "Method", "Configuration"}
    levels = [n for n in table.values.index.names if n not in fixed]
    if len(levels) != 1:
        raise ValueError(f"{table.name}: a sweep plot needs one swept row level, found {levels}")
    return levels[0]


# --------------------------------------------------------------------------- configurations of records


def _text(value: Any) -> str:
    return "" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value)


def configurations(records: Sequence[Dict[str, Any]], dataset: str) -> List[Tuple[str, List[Dict[str, Any]]]]:
    """The records that hold outlier statistics for `dataset`, grouped by configuration (same significant
    settings), each group named by what tells it apart: the Hydra choices that differ, then any other
    setting that differs among runs of equal choices."""
    records = [r for r in records if (r.get("outlier_stats") or {}).get(dataset)]
    if not records:
        return []
    frame = records_frame(records)
    frame = frame[frame["dataset"] == dataset].reset_index(drop=True)
    table = settings(frame)
    choices = [f"choice.{g}" for g in CHOICE_ORDER if f"choice.{g}" in frame.columns]
    choices += sorted(c for c in frame.columns if c.startswith("choice.") and c not in choices)
    choices = [c for c in choices if frame[c].nunique(dropna=False) > 1]
    # missing values (a choice only some runs have, such as `experiment`) are NaN: spelled "" (pandas 3 keeps
    # NaN through astype(str), which str.join refuses)
    choice_key = frame[choices].map(_text).agg("|".join, axis=1) if choices else pd.Series("", index=frame.index)
    config_id = table.map(_text).agg("|".join, axis=1)
    by_dir = {r["run_dir"]: r for r in records}
    groups: Dict[str, Tuple[str, List[Dict[str, Any]]]] = {}
    for _, rows in frame.groupby(choice_key, sort=False):
        # settings that differ among runs of the same choices name them apart
        distinct = table.loc[rows.index].nunique()
        extra = [c for c in table.columns if distinct[c] > 1]
        for i in rows.index:
            parts = [f"{c[len('choice.'):]}={frame.at[i, c]}" for c in choices if _text(frame.at[i, c])]
            parts += [describe(c, table.at[i, c]) for c in extra]
            label = ", ".join(parts) or str(frame.at[i, "preset"] if "preset" in frame else "runs")
            groups.setdefault(config_id[i], (label, []))[1].append(by_dir[frame.at[i, "run_dir"]])
    named = []
    for label, members in groups.values():
        named.append((label + (f" ({len(members)} runs)" if len(members) > 1 else ""), members))
    return sorted(named, key=lambda item: item[0])


def _mean_lists(lists: Sequence[Sequence[Optional[float]]]) -> np.ndarray:
    array = np.array([[np.nan if v is None else v for v in values] for values in lists], dtype=float)
    with np.errstate(invalid="ignore"), _quiet():
        return np.nanmean(array, axis=0)


class _quiet:
    """Silences numpy's "mean of empty slice" for layers where every run has NaN (e.g. jaccard at layer 0)."""

    def __enter__(self):
        import warnings

        self._context = warnings.catch_warnings()
        self._context.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc):
        return self._context.__exit__(*exc)


# --------------------------------------------------------------------------- per-layer statistics


def layer_stat_names(entry: Dict[str, Any]) -> List[str]:
    """The per-layer statistics of one dataset's `outlier_stats` entry: its lists as long as `layer`."""
    layers = len(entry["layer"])
    return [k for k, v in entry.items() if k != "layer" and isinstance(v, list) and len(v) == layers]


LINE_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
LINE_STYLES = ("-", "--", "-.", ":")


def layer_stats_plot(records: Sequence[Dict[str, Any]], dataset: str,
                     stats: Optional[Sequence[str]] = None) -> Figure:
    """One panel per statistic against the layer (default: every per-layer list the records hold, in their
    order), one line per configuration (runs of one configuration averaged)."""
    groups = configurations(records, dataset)
    if not groups:
        raise ValueError(f"no run holds per-layer outlier statistics for {dataset!r} (stats.enabled=true)")
    if stats is None:
        stats = layer_stat_names(groups[0][1][0]["outlier_stats"][dataset])
    columns = min(3, len(stats))
    rows = math.ceil(len(stats) / columns)
    figure = Figure(figsize=(4.2 * columns, 3.2 * rows + 0.6), layout="constrained")
    panels = figure.subplots(rows, columns, squeeze=False).ravel()
    for axes, stat in zip(panels, stats):
        for index, (label, members) in enumerate(groups):
            entries = [m["outlier_stats"][dataset] for m in members]
            # lines that coincide (statistics that do not depend on the settings) stay visible: each
            # configuration has its own marker and dash, later ones drawn thinner on top
            shrink = index / max(len(groups), 1)
            axes.plot(entries[0]["layer"], _mean_lists([e[stat] for e in entries]), label=label,
                      marker=LINE_MARKERS[index % len(LINE_MARKERS)], markersize=6 - 3 * shrink,
                      linestyle=LINE_STYLES[index % len(LINE_STYLES)], linewidth=2.2 - 1.4 * shrink, alpha=0.85)
        axes.set_title(STAT_TITLES.get(stat, stat))
        axes.set_xlabel("layer (block output)")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))  # layers are whole blocks
        axes.grid(alpha=0.3)
    for axes in panels[len(stats):]:
        axes.set_visible(False)
    handles, labels = panels[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="outside lower center", ncols=min(3, len(labels)), fontsize="small")
    figure.suptitle(f"Per-layer outlier statistics, {dataset_label(dataset)}")
    return figure


def heatmap_plot(records: Sequence[Dict[str, Any]], dataset: str) -> Figure:
    """Outlier positions at the detection block: per configuration, the fraction of crops in which each
    patch was an outlier (runs of one configuration pooled), on one colour scale."""
    maps = []
    for label, members in configurations(records, dataset):
        entries = [m["outlier_stats"][dataset].get("heatmap") for m in members]
        entries = [e for e in entries if e]
        if not entries:
            continue
        counts = sum(np.asarray(e["counts"], dtype=float) for e in entries)
        crops = sum(int(e["n_crops"]) for e in entries)
        maps.append((label, counts / max(crops, 1)))
    if not maps:
        raise ValueError(f"no run holds an outlier heat map for {dataset!r} (SFP with the mitigator on)")
    columns = min(3, len(maps))
    rows = math.ceil(len(maps) / columns)
    figure = Figure(figsize=(3.6 * columns + 0.8, 3.2 * rows + 0.4), layout="constrained")
    panels = figure.subplots(rows, columns, squeeze=False).ravel()
    top = max(float(m.max()) for _, m in maps) or 1.0
    image = None
    for axes, (label, frequency) in zip(panels, maps):
        image = axes.imshow(frequency, vmin=0, vmax=top, cmap="magma")
        axes.set_title(label, fontsize="small")
        axes.set_xticks([])
        axes.set_yticks([])
    for axes in panels[len(maps):]:
        axes.set_visible(False)
    figure.colorbar(image, ax=list(panels[: len(maps)]), label="fraction of crops with an outlier here")
    figure.suptitle(f"Outlier positions at the detection block, {dataset_label(dataset)}")
    return figure
