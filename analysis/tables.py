"""The paper's tables from a runs DataFrame (`analysis.runs.load_runs`): mIoU cells averaged over the runs of
one configuration, their run counts, the average over the table's datasets, published rows and differences.

Every builder returns a `Table`; `analysis.render` turns it into markdown, LaTeX or CSV. A cell no run
filled is NaN (an empty cell), never 0.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from itertools import product
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import pandas as pd

from .names import (
    BACKBONE_ORDER, BENCHMARKS, DATASET_LABELS, METHOD_ORDER, PRESET_ORDER, PRESET_TO_PUBLISHED, backbone_label,
    order_by, order_datasets, preset_label, published_method,
)
from .intervals import BootstrapSettings, interval_notes, paired_row_intervals
from .published import load_published, published_label, published_protocol_notes
from .runs import numeric, resolve_column
from .variants import defaults, normalise, protocol_flags, select_configurations

AVERAGE = "avg"
DELTA = "delta"
REPRODUCED, PUBLISHED, DIFFERENCE = "reproduced", "published", "difference"
VARIANT_LEVEL = "Configuration"
ROW_LEVEL = "Row"
LEVEL_NAMES = {"backbone": "Backbone", "preset": "Method"}


@dataclass
class Table:
    """values: mIoU per row (a MultiIndex of labels) and column (dataset keys, then `avg`, then `delta` when
    the table compares with a reference row); counts: runs averaged into each dataset cell; kinds: reproduced,
    published or difference per row; block_levels: index levels inside whose groups the best value counts."""

    name: str
    title: str
    values: pd.DataFrame
    counts: pd.DataFrame
    kinds: pd.Series
    datasets: List[str]
    delta_label: Optional[str] = None
    block_levels: Tuple[str, ...] = ()
    notes: List[str] = field(default_factory=list)
    # paired bootstrap intervals of difference rows: same index as values, columns datasets + avg (NaN: none)
    lo: Optional[pd.DataFrame] = None
    hi: Optional[pd.DataFrame] = None

    def cell(self, row: Union[Tuple[Any, ...], Any], column: str) -> float:
        """One value, by row label (tuple of index values) and column key (dataset, `avg` or `delta`)."""
        return float(self.values.loc[row if isinstance(row, tuple) else (row,), column])


def _datasets(runs: pd.DataFrame, datasets: Optional[Union[str, Sequence[str]]]) -> List[str]:
    if datasets is None:
        return order_datasets(runs["dataset"].dropna().unique())
    if isinstance(datasets, str):
        datasets = list(BENCHMARKS) if datasets == "all" else [d.strip() for d in datasets.split(",") if d.strip()]
    known = set(runs["dataset"].dropna().unique()) | set(DATASET_LABELS)
    unknown = [d for d in datasets if d not in known]
    if unknown:  # a typo would print an empty column
        raise ValueError(f"unknown dataset(s) {', '.join(unknown)}: expected the runs' datasets or a dataset file "
                         f"of the config folder ({', '.join(order_datasets(known))})")
    return list(datasets)


def _cells(runs: pd.DataFrame, keys: List[str], datasets: List[str]) -> Tuple[pd.DataFrame, pd.DataFrame]:
    """Mean mIoU and number of runs per (keys, dataset)."""
    grouped = runs.groupby(keys + ["dataset"], dropna=False, sort=False)["miou"].agg(["mean", "count"])
    means = grouped["mean"].unstack("dataset").reindex(columns=datasets)
    counts = grouped["count"].unstack("dataset").reindex(columns=datasets).fillna(0).astype("int64")
    return means, counts


def _text(key: Tuple[Any, ...]) -> Tuple[str, ...]:
    return tuple(normalise(v) for v in key)


def _average(values: pd.DataFrame, datasets: List[str]) -> pd.Series:
    """Mean over the table's datasets; NaN when any of them is missing (an average over fewer datasets
    would not be comparable)."""
    return values[datasets].mean(axis=1, skipna=False) if datasets else pd.Series(np.nan, index=values.index)


# --------------------------------------------------------------------------- main table


def main_table(runs: pd.DataFrame, *, published: Union[pd.DataFrame, bool, None] = None,
               datasets: Optional[Union[str, Sequence[str]]] = None, published_rows: str = "all",
               backbone_labels: Optional[Mapping[str, str]] = None, reference: Optional[str] = None,
               intervals: Optional[BootstrapSettings] = None) -> Table:
    """Methods x datasets + average, one block per backbone. Each method shows its reproduced row(s) (one per
    preset), the published rows of that method and backbone, and one difference row per (reproduced,
    published) pair; with `reference` (a preset), also one difference row per reproduced row against that
    preset's row of the same backbone, with its paired bootstrap interval when `intervals` are asked for.
    Reproduced rows of a block whose protocols differ are marked ‡ and named in a note.

    published: the published table (default: the project's CSV; False: none). published_rows: "all" (every
    published method of a backbone that has runs, with empty reproduced rows for presets not run) or
    "matched" (only methods that have runs). backbone_labels: maps backbone choices to the published names
    (vit_b16 -> ViT-B/16 is built in; e.g. {"custom": "ViT-B/16"}).
    """
    if published_rows not in ("all", "matched"):
        raise ValueError(f"published_rows must be 'all' or 'matched', got {published_rows!r}")
    runs = runs[runs["dataset"].notna()]
    datasets = _datasets(runs, datasets)
    if published is None or published is True:
        published = load_published()
    elif published is False:
        published = load_published().iloc[0:0]

    selection = select_configurations(runs, ["backbone", "preset"],
                                      describe_group=lambda key: f"{key[1]} on {key[0]}")
    runs = runs[selection.keep].assign(variant=selection.variant[selection.keep])
    means, counts = _cells(runs, ["backbone", "preset", "variant"], datasets)
    protocol_notes, odd_rows = protocol_flags(runs, ["backbone", "preset", "variant"], ["backbone"],
                                              describe_row=lambda k: k[1] + (f" [{k[2]}]" if k[2] else ""))
    members = _members(runs, ["backbone", "preset", "variant"])
    pairs: List[Tuple[Tuple[str, str, str], Tuple[str, str, str]]] = []
    pair_rows: Dict[Tuple[str, str, str], int] = {}  # raw key -> position of its difference row
    reference_notes: List[str] = []
    shown_published: List[pd.DataFrame] = []

    labels: List[Tuple[str, str, str]] = []
    kinds: List[str] = []
    rows: List[pd.Series] = []
    row_counts: List[pd.Series] = []
    empty = pd.Series(np.nan, index=datasets)

    def add(label: Tuple[str, str, str], kind: str, values: pd.Series, count: Optional[pd.Series] = None) -> None:
        labels.append(label)
        kinds.append(kind)
        rows.append(values.reindex(datasets))
        row_counts.append(count.reindex(datasets) if count is not None else pd.Series(0, index=datasets))

    for backbone in order_by(runs["backbone"].dropna().unique(), BACKBONE_ORDER):
        shown_backbone = backbone_label(backbone, backbone_labels)
        reference_key = None
        if reference is not None:
            keys = [k for k in means.index if k[0] == backbone and k[1] == reference]
            if len(keys) == 1:
                reference_key = keys[0]
            else:
                reference_notes.append(f"{shown_backbone}: no difference to {reference} (" + (
                    "no run of it" if not keys else f"{len(keys)} configurations of it") + ")")
        ran = order_by(runs.loc[runs["backbone"] == backbone, "preset"].dropna().unique(), PRESET_ORDER)
        block_published = published[published["backbone"] == shown_backbone]
        methods = {published_method(p) for p in ran}
        if published_rows == "all":
            methods |= set(block_published["method"])
        for method in order_by(methods, METHOD_ORDER):
            presets = {p for p in ran if published_method(p) == method}
            if published_rows == "all":  # presets not run show as empty rows
                presets |= {p for p, m in PRESET_TO_PUBLISHED.items() if m == method}
            presets = order_by(presets, PRESET_ORDER)
            reproduced: List[Tuple[str, pd.Series]] = []
            for preset in presets:
                variants = sorted(v for b, p, v in means.index if b == backbone and p == preset) or [None]
                for variant in variants:
                    name = preset + (f" [{variant}]" if variant else "")
                    label = f"reproduced: {preset_label(preset)}" + (f" [{variant}]" if variant else "")
                    if variant is None:
                        values, count = empty, None
                    else:
                        values, count = means.loc[(backbone, preset, variant)], counts.loc[(backbone, preset, variant)]
                    if variant is not None and (backbone, preset, variant) in odd_rows:
                        label += " ‡"
                    add((shown_backbone, method, label), REPRODUCED, values, count)
                    reproduced.append((name, rows[-1]))
                    if reference_key is not None and variant is not None and (backbone, preset, variant) != \
                            reference_key:
                        key = (backbone, preset, variant)
                        add((shown_backbone, method, f"Δ {name} vs {reference}"), DIFFERENCE,
                            values - means.loc[reference_key])
                        pairs.append((key, reference_key))
                        pair_rows[key] = len(rows) - 1
            block_rows = block_published[block_published["method"] == method]
            shown_published.append(block_rows)
            for _, row in block_rows.iterrows():
                add((shown_backbone, method, published_label(row)), PUBLISHED,
                    row.reindex(datasets).astype("float64"))
            shared_source = block_rows["source"].duplicated(keep=False)
            for name, values in reproduced:
                for i, row in block_rows.iterrows():
                    note = f"; {row['note']}" if shared_source[i] and str(row["note"]).strip() else ""
                    add((shown_backbone, method, f"Δ {name} vs {row['source']}{note}"), DIFFERENCE,
                        values - row.reindex(datasets).astype("float64"))

    index = pd.MultiIndex.from_tuples(labels, names=["Backbone", "Method", "Row"])
    values = pd.DataFrame(rows, index=index, columns=datasets).astype("float64")
    count_frame = pd.DataFrame(row_counts, index=index, columns=datasets).fillna(0).astype("int64")
    kind_series = pd.Series(kinds, index=index)
    values[AVERAGE] = _average(values, datasets)
    # A difference row's average is the difference of the averages (both over the same datasets).
    differences = kind_series == DIFFERENCE
    values.loc[differences, AVERAGE] = values.loc[differences, datasets].mean(axis=1, skipna=False)
    notes = [
        "mIoU (%). Empty cells: no run, or no published figure. Avg: mean over the columns shown, empty when one "
        "is missing. Δ: reproduced minus published" + (f", or reproduced minus reproduced {reference}" if reference
                                                        else "") + ".",
        *selection.notes, *protocol_notes, *reference_notes,
    ]
    lo = hi = None
    if intervals is not None and pairs:
        found, problems = paired_row_intervals(members, pairs, datasets, intervals)
        columns = datasets + [AVERAGE]
        lo = pd.DataFrame(np.nan, index=index, columns=columns)
        hi = pd.DataFrame(np.nan, index=index, columns=columns)
        for key, position in pair_rows.items():
            for column, (low, high) in found.get(key, {}).items():
                lo.iloc[position, columns.index(column)] = low
                hi.iloc[position, columns.index(column)] = high
        notes.extend(interval_notes(intervals, problems, " Published rows have no per-image records: no interval."))
    if shown_published:
        notes.extend(published_protocol_notes(pd.concat(shown_published)))
    return Table("main", "Main results: mIoU per method and dataset", values, count_frame, kind_series,
                 datasets, block_levels=("Backbone",), notes=notes, lo=lo, hi=hi)


# --------------------------------------------------------------------------- ablation tables


def ablation_table(runs: pd.DataFrame, keys: Sequence[str], level_names: Sequence[str], *, name: str,
                   title: str, expected: Optional[Sequence[Tuple[Any, ...]]] = None,
                   reference: Optional[Tuple[Any, ...]] = None, reference_text: str = "",
                   datasets: Optional[Union[str, Sequence[str]]] = None,
                   context: Sequence[str] = ("backbone", "preset"),
                   intervals: Optional[BootstrapSettings] = None,
                   protocol_exempt: Sequence[str] = ()) -> Table:
    """One row per value combination of `keys` (run columns), a column per dataset and the average, and,
    with `reference`, the difference of each row's average to the reference row's, per block. `expected`
    combinations always get a row (empty when not run); others follow in sorted order. `context` columns
    that differ among the runs become the outer row levels (one block each)."""
    runs = runs[runs["dataset"].notna()]
    datasets = _datasets(runs, datasets)
    keys = list(keys)
    outer = [c for c in context if runs[c].nunique(dropna=False) > 1]
    group_keys = outer + keys

    def describe(key: Any) -> str:
        key = key if isinstance(key, tuple) else (key,)
        return ", ".join(f"{n}={normalise(v)}" for n, v in zip([LEVEL_NAMES.get(c, c) for c in outer] +
                                                                 list(level_names), key))

    selection = select_configurations(runs, group_keys, describe_group=describe)
    runs = runs[selection.keep].assign(variant=selection.variant[selection.keep])
    means, counts = _cells(runs, group_keys + ["variant"], datasets)

    n_outer = len(outer)
    blocks = sorted({k[:n_outer] for k in means.index}, key=lambda t: [numeric(v) for v in t]) or [()]
    expected = [tuple(e) for e in (expected or [])]
    expected_text = {_text(e) for e in expected}
    ordered: List[Tuple[Any, ...]] = []
    for block in blocks:
        observed = [k for k in means.index if k[:n_outer] == block]
        others = sorted({k[n_outer:-1] for k in observed if _text(k[n_outer:-1]) not in expected_text},
                        key=lambda t: [numeric(v) for v in t])
        for key in expected + others:
            matched = sorted((k for k in observed if _text(k[n_outer:-1]) == _text(key)), key=lambda k: k[-1])
            ordered.extend(matched or [block + key + ("",)])
    has_variants = any(k[-1] for k in ordered)
    values = means.reindex(pd.MultiIndex.from_tuples(ordered)).astype("float64")
    count_frame = counts.reindex(pd.MultiIndex.from_tuples(ordered)).fillna(0).astype("int64")
    values[AVERAGE] = _average(values, datasets)

    notes = ["mIoU (%). Empty cells: no run. Avg: mean over the columns shown, empty when one is missing."]
    delta_label = None
    pairs: List[Tuple[Tuple[Any, ...], Tuple[Any, ...]]] = []  # (row, its block's reference row)
    if reference is not None:
        delta_label = f"Δ Avg vs {reference_text}"
        values[DELTA] = np.nan
        for block in blocks:
            rows = [k for k in ordered if k[:n_outer] == block]
            refs = [k for k in rows if _text(k[n_outer:-1]) == _text(reference)]
            if len(refs) == 1:
                values.loc[rows, DELTA] = values.loc[rows, AVERAGE] - values.loc[refs[0], AVERAGE]
                pairs += [(k, refs[0]) for k in rows if k != refs[0] and count_frame.loc[[k]].to_numpy().any()]
            elif len(refs) > 1:
                notes.append(f"{describe(block + reference) if block else reference_text}: several configurations, "
                             "no difference shown")
    notes.extend(selection.notes)
    members = _members(runs, group_keys + ["variant"])
    notes.extend(protocol_flags(runs, group_keys + ["variant"], outer, exclude=protocol_exempt,
                                describe_row=lambda k: describe(k[:-1]) + (f" [{k[-1]}]" if k[-1] else ""))[0])

    names = [LEVEL_NAMES.get(c, c) for c in outer] + list(level_names) + [VARIANT_LEVEL]
    kinds = [REPRODUCED] * len(ordered)
    labels: List[Tuple[Any, ...]] = list(ordered)
    lo = hi = None
    if intervals is not None and pairs:  # a difference row under each compared row, with its interval
        found, problems = paired_row_intervals(members, pairs, datasets, intervals)
        reference_of = dict(pairs)
        columns = datasets + [AVERAGE]
        rows, count_rows, kinds, labels, lo_rows, hi_rows = [], [], [], [], [], []
        for k in ordered:
            rows.append(values.loc[[k]].iloc[0])
            count_rows.append(count_frame.loc[[k]].iloc[0])
            kinds.append(REPRODUCED)
            labels.append(k + ("mIoU",))
            lo_rows.append({})
            hi_rows.append({})
            if k in reference_of:
                rows.append(values.loc[[k], columns].iloc[0] - values.loc[[reference_of[k]], columns].iloc[0])
                count_rows.append(pd.Series(0, index=datasets))
                kinds.append(DIFFERENCE)
                labels.append(k + (f"Δ vs {reference_text}",))
                lo_rows.append({c: v[0] for c, v in found.get(k, {}).items()})
                hi_rows.append({c: v[1] for c, v in found.get(k, {}).items()})
        raw = pd.MultiIndex.from_tuples(labels)
        values = pd.DataFrame(rows, index=raw).reindex(columns=values.columns).astype("float64")
        count_frame = pd.DataFrame(count_rows, index=raw).reindex(columns=datasets).fillna(0).astype("int64")
        lo = pd.DataFrame(lo_rows, index=raw).reindex(columns=columns).astype("float64")
        hi = pd.DataFrame(hi_rows, index=raw).reindex(columns=columns).astype("float64")
        names = names + [ROW_LEVEL]
        notes.extend(interval_notes(intervals, problems))
    if has_variants:
        index = pd.MultiIndex.from_tuples(labels, names=names)
    else:  # every row is one configuration: no Configuration column
        variant_at = len(names) - (2 if lo is not None else 1)
        index = pd.MultiIndex.from_tuples([k[:variant_at] + k[variant_at + 1:] for k in labels],
                                          names=names[:variant_at] + names[variant_at + 1:])
    values.index = count_frame.index = index
    if lo is not None:
        lo.index = hi.index = index
    kinds = pd.Series(kinds, index=index)
    return Table(name, title, values, count_frame, kinds, datasets, delta_label=delta_label,
                 block_levels=tuple(LEVEL_NAMES.get(c, c) for c in outer), notes=notes, lo=lo, hi=hi)


def _members(runs: pd.DataFrame, keys: Sequence[str]) -> Dict[Tuple[Any, ...], Dict[str, List[str]]]:
    """Row key -> dataset -> the run folders averaged into that cell."""
    members: Dict[Tuple[Any, ...], Dict[str, List[str]]] = {}
    for key, folders in runs.groupby(list(keys) + ["dataset"], dropna=False, sort=False)["run_dir"]:
        members.setdefault(tuple(key[:-1]), {})[key[-1]] = sorted(set(folders))
    return members


def components_table(runs: pd.DataFrame, *, preset: Optional[str] = "sfp",
                     datasets: Optional[Union[str, Sequence[str]]] = None,
                     intervals: Optional[BootstrapSettings] = None) -> Table:
    """The component ablation: one row per on/off combination of the mitigator, enhancer and integrator (and
    the aggregation when it was switched too) of `preset`'s runs, with the difference to the full method."""
    if preset is not None:
        runs = runs[runs["preset"] == preset]
    if runs.empty:
        raise ValueError(f"no runs of the preset {preset!r} for the component ablation")
    components = ["mitigator", "enhancer", "integrator"]
    components += [name for name in ("aggregation", "registers") if runs[name].nunique() > 1]
    # a switch held at one value in every run (e.g. enhancer=on in a mitigator x registers sweep) stays fixed
    fixed = {name: runs[name].dropna().iloc[0] for name in components if runs[name].nunique() == 1}
    options = [[fixed[name]] if name in fixed else ["off", "on"] for name in components]
    reference = tuple(fixed.get(name, "off" if name == "registers" else "on") for name in components)
    return ablation_table(
        runs, components, components, name="components",
        title=f"Component ablation ({preset or 'all presets'}): mIoU per on/off combination",
        expected=list(product(*options)),
        reference=reference, reference_text="full", datasets=datasets,
        context=("backbone",) if preset is not None else ("backbone", "preset"), intervals=intervals)


def detector_table(runs: pd.DataFrame, *, preset: Optional[str] = "sfp",
                   datasets: Optional[Union[str, Sequence[str]]] = None,
                   intervals: Optional[BootstrapSettings] = None) -> Table:
    """Outlier detectors (mitigator.detector) of `preset`'s runs with the mitigator on, with the difference
    to the default detector."""
    from sfp.config.schema import Detector

    if preset is not None:
        runs = runs[runs["preset"] == preset]
    runs = runs[runs["mitigator"] == "on"]
    if runs.empty:
        raise ValueError(f"no runs of the preset {preset!r} with the mitigator on for the detector table")
    default = defaults()["mitigator.detector"]
    return ablation_table(
        runs, ["cfg.mitigator.detector"], ["detector"], name="detector",
        title=f"Outlier detector ({preset or 'all presets'}, mitigator on): mIoU per detector",
        expected=[(d.value,) for d in Detector], reference=(default,), reference_text=default,
        datasets=datasets, context=("backbone",) if preset is not None else ("backbone", "preset"),
        intervals=intervals)


def sweep_table(runs: pd.DataFrame, param: str, *, datasets: Optional[Union[str, Sequence[str]]] = None,
                intervals: Optional[BootstrapSettings] = None) -> Table:
    """One row per value of a swept config field (e.g. "mitigator.top_k" reads `cfg.mitigator.top_k`), with
    the difference to the field's default when that value was run."""
    column = resolve_column(runs, param)
    field_name = column[4:] if column.startswith("cfg.") else column
    default = defaults().get(field_name)
    observed = {normalise(v) for v in runs[column]}
    reference = (default,) if default is not None and default in observed else None
    return ablation_table(
        runs, [column], [field_name], name=f"sweep-{field_name}",
        title=f"Sweep of {field_name}: mIoU per value", reference=reference,
        reference_text=f"{field_name}={default} (default)", datasets=datasets, intervals=intervals,
        protocol_exempt=_swept_settings(field_name))


def _swept_settings(field_name: str) -> Tuple[str, ...]:
    """The settings a sweep varies on purpose: the field, and for a dataset's field its per-row name."""
    parts = field_name.split(".")
    if len(parts) > 2 and parts[0] == "datasets":
        return (field_name, "dataset." + ".".join(parts[2:]))
    return (field_name,)


TABLES: Dict[str, Callable[..., Table]] = {
    "main": main_table, "components": components_table, "detector": detector_table, "sweep": sweep_table,
}
